//! The controller's HTTP calls: session creations (the state changes that dashboards receive) and
//! the health page (how many dashboards the server counts).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use awc::http::StatusCode;
use awc::http::header::CONTENT_TYPE;
use serde_json::Value;

/// A client of one server's `/api/mcp`. Cheap to clone (awc's client is an `Rc`).
#[derive(Clone)]
pub struct Api {
    client: awc::Client,
    base: Rc<str>,
    key: Rc<str>,
}

impl Api {
    /// A client for `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str, key: &str) -> Self {
        Self {
            client: tether_bench::http::client(64),
            base: format!("{base}/api/mcp").into(),
            key: key.into(),
        }
    }

    /// Creates session `id` (201 expected).
    ///
    /// # Errors
    /// Any other status, or a transport error, as text.
    pub async fn create(&self, id: &str, client_type: &str) -> Result<(), String> {
        let body = serde_json::json!({ "client_type": client_type, "session_id": id }).to_string();
        let mut resp = self
            .client
            .post(format!("{}/sessions", self.base))
            .bearer_auth(&*self.key)
            .insert_header((CONTENT_TYPE, "application/json"))
            .send_body(body)
            .await
            .map_err(|e| format!("create {id}: {e}"))?;
        // Reading the whole body returns the connection to the pool.
        let bytes = resp.body().await.map_err(|e| format!("create {id}: {e}"))?;
        if resp.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(format!(
                "create {id}: {} {}",
                resp.status(),
                String::from_utf8_lossy(&bytes)
            ))
        }
    }

    /// The `dashboards` count of `GET /health`.
    ///
    /// # Errors
    /// A failed request, or a body without the count.
    pub async fn dashboards(&self) -> Result<u64, String> {
        let mut resp = self
            .client
            .get(format!("{}/health", self.base))
            .send()
            .await
            .map_err(|e| format!("health: {e}"))?;
        let bytes = resp.body().await.map_err(|e| format!("health: {e}"))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("health: not JSON: {e}"))?;
        v.get("dashboards")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("health: no dashboards count in {v}"))
    }

    /// Creates every session of `ids`, `concurrency` requests at a time.
    ///
    /// # Errors
    /// The first failure (the other workers stop at their next request).
    pub async fn seed(
        &self,
        ids: Vec<String>,
        client_type: &str,
        concurrency: usize,
    ) -> Result<(), String> {
        let ids = Rc::new(ids);
        let next = Rc::new(Cell::new(0usize));
        let failed: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
        let client_type: Rc<str> = client_type.into();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.clamp(1, 64) {
            let (api, ids, next, failed, ct) = (
                self.clone(),
                ids.clone(),
                next.clone(),
                failed.clone(),
                client_type.clone(),
            );
            tasks.push(actix_rt::spawn(async move {
                // Bounded by the id count: each turn takes the next index.
                while failed.borrow().is_none() {
                    let i = next.get();
                    let Some(id) = ids.get(i) else { break };
                    next.set(i + 1);
                    if let Err(e) = api.create(id, &ct).await {
                        *failed.borrow_mut() = Some(e);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        match failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
