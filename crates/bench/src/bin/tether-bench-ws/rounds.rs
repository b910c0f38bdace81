//! One latency round: `k` session creations, each timed from just before its request to its
//! arrival at every dashboard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::fleet::Fleet;
use crate::http::Api;
use crate::report::Round;
use crate::stats::Samples;

/// How long a round waits for the last deliveries after its last creation.
const DRAIN: Duration = Duration::from_secs(15);

/// Creates `k` sessions `spacing` apart and times each one's arrival at every dashboard of each
/// group in `groups` (`(group, dashboards)`); one result per group, in that order.
pub async fn round(
    api: &Api,
    fleet: &Fleet,
    tag: &str,
    k: usize,
    spacing: Duration,
    groups: &[(u8, usize)],
) -> Result<Vec<Raw>, BoxError> {
    let ids: Vec<String> = (0..k).map(|i| format!("{tag}-{i}")).collect();
    let map: HashMap<String, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u32))
        .collect();
    fleet.arm(map).await?;
    let per_event: usize = groups.iter().map(|g| g.1).sum();
    let mut sent: Vec<Option<Instant>> = vec![None; k];
    let mut create_error = None;
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let at = start + spacing.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        tokio::time::sleep_until(at.into()).await;
        let t0 = Instant::now();
        match api.create(id, "bench").await {
            Ok(()) => sent[i] = Some(t0),
            Err(e) => {
                create_error.get_or_insert(e);
            }
        }
    }
    let created = sent.iter().filter(|s| s.is_some()).count();
    let expected = created * per_event;
    let deadline = Instant::now() + DRAIN;
    while fleet.arrived() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrivals = fleet.collect().await?;
    let mut samples: Vec<Samples> = vec![Samples::default(); groups.len()];
    let mut at: Vec<Vec<(u32, Instant)>> = vec![Vec::new(); groups.len()];
    for a in arrivals {
        let Some(slot) = groups.iter().position(|g| g.0 == a.group) else {
            continue;
        };
        if let Some(Some(t0)) = sent.get(a.event as usize) {
            samples[slot].push(a.at.saturating_duration_since(*t0));
            at[slot].push((a.event, a.at));
        }
    }
    Ok(groups
        .iter()
        .zip(samples.into_iter().zip(at))
        .map(|(g, (s, at))| Raw {
            samples: s,
            arrivals: at,
            sent: sent.clone(),
            created,
            receivers: g.1,
            create_error: create_error.clone(),
        })
        .collect())
}

/// A round's samples before the percentiles, so that several rounds can be pooled.
#[derive(Default)]
pub struct Raw {
    /// Latencies of every delivered (dashboard, event) pair.
    pub samples: Samples,
    /// (event, arrival) of this round only: indices repeat across rounds, so `add` drops them.
    pub arrivals: Vec<(u32, Instant)>,
    /// When each event's request was sent (this round only, like `arrivals`).
    sent: Vec<Option<Instant>>,
    created: usize,
    receivers: usize,
    create_error: Option<String>,
}

impl Raw {
    /// Pools `other` into this one.
    pub fn add(&mut self, other: Raw) {
        self.arrivals.clear();
        self.sent.clear();
        self.samples.extend(other.samples);
        self.created += other.created;
        self.receivers = other.receivers;
        self.create_error = self.create_error.take().or(other.create_error);
    }

    /// The percentiles.
    pub fn finish(self) -> Round {
        Round {
            created: self.created,
            receivers: self.receivers,
            latency: self.samples.summary(),
            create_error: self.create_error,
        }
    }
}

/// Per event of one round, the slowest delivery in ms: shows whether a slow tail is one event or
/// the whole round.
pub fn event_maxima(r: &Raw) -> String {
    let mut max = vec![Duration::ZERO; r.sent.len()];
    for (e, at) in &r.arrivals {
        if let (Some(m), Some(Some(t0))) = (max.get_mut(*e as usize), r.sent.get(*e as usize)) {
            *m = (*m).max(at.saturating_duration_since(*t0));
        }
    }
    max.iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The only group's round.
pub fn single(groups: Vec<Raw>) -> Raw {
    groups.into_iter().next().unwrap_or_default()
}
