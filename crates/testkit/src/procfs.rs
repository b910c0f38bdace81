//! What Linux's `/proc` tells about a process and the machine: memory, CPU time, and the machine's
//! busy and idle time. The end-to-end tests read a server's memory; the load generators also charge
//! CPU time to the server, to themselves and to everything else.
//!
//! ```
//! use tether_testkit::procfs::{self, Pid};
//!
//! let memory = procfs::memory_kib(Pid::This)?;
//! assert!(memory.rss > 0 && memory.peak >= memory.rss);
//! let ticks = procfs::clock_ticks();
//! assert!(procfs::cpu_time(Pid::This, ticks)? <= procfs::machine_busy(ticks)?);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::process::Command;
use std::time::Duration;

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The calling process (`/proc/self`).
    This,
    /// Another one.
    Of(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::This => "/proc/self".to_owned(),
            Pid::Of(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Resident memory, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Now (`VmRSS`).
    pub rss: u64,
    /// The most it has been (`VmHWM`).
    pub peak: u64,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Resident memory of `pid`, now and at its peak.
///
/// # Errors
/// When `/proc/PID/status` cannot be read or lacks the fields.
pub fn memory_kib(pid: Pid) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("{}/status", pid.dir()))?;
    let field = |name: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| invalid(format!("no {name} in /proc/PID/status")))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100, Linux's value, if that
/// fails).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn ticks_to_time(ticks: u64, ticks_per_sec: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec.max(1) as f64)
}

/// User plus system CPU time of `pid` so far, all threads, in clock ticks.
///
/// # Errors
/// When `/proc/PID/stat` cannot be read or parsed.
pub fn cpu_ticks(pid: Pid) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("{}/stat", pid.dir()))?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| invalid("unexpected /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let field = |i: usize, name: &str| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| invalid(format!("no {name} in /proc/PID/stat")))
    };
    Ok(field(11, "utime")? + field(12, "stime")?)
}

/// [`cpu_ticks`] as time.
///
/// # Errors
/// As [`cpu_ticks`].
pub fn cpu_time(pid: Pid, ticks_per_sec: u64) -> io::Result<Duration> {
    Ok(ticks_to_time(cpu_ticks(pid)?, ticks_per_sec))
}

/// On-CPU time of the live threads of `pid` so far, summed from `/proc/PID/task/*/schedstat`
/// (nanoseconds). Finer than [`cpu_time`], which the kernel samples once per tick and may charge a
/// whole tick to a thread that woke up on it; a thread that has exited no longer counts.
///
/// # Errors
/// When `/proc/PID/task` cannot be read.
pub fn sched_time(pid: Pid) -> io::Result<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("{}/task", pid.dir()))? {
        // A thread may exit between the listing and the read: it simply no longer counts.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(ns))
}

/// The machine's `cpu` line of `/proc/stat`, in clock ticks: user nice system idle iowait irq
/// softirq steal (guest times follow, already inside user and nice).
fn machine_ticks() -> io::Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| invalid("no cpu line in /proc/stat"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("/proc/stat: {e}")))?;
    if ticks.len() < 5 {
        return Err(invalid("/proc/stat: fewer than 5 cpu fields"));
    }
    Ok(ticks)
}

/// Busy CPU time of the whole machine so far, all cores (everything but idle and I/O wait), in
/// clock ticks: with a process's own time it tells what else ran meanwhile.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_busy_ticks() -> io::Result<u64> {
    Ok(machine_ticks()?
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum())
}

/// [`machine_busy_ticks`] as time.
///
/// # Errors
/// As [`machine_busy_ticks`].
pub fn machine_busy(ticks_per_sec: u64) -> io::Result<Duration> {
    Ok(ticks_to_time(machine_busy_ticks()?, ticks_per_sec))
}

/// Idle plus I/O-wait time of the whole machine so far, all cores. With a tickless kernel the idle
/// time is measured exactly, while the busy fields are sampled once per tick and miss work done
/// between two ticks (such as work a timer starts right after one): wall time × cores − this is
/// the busy time to trust.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_idle(ticks_per_sec: u64) -> io::Result<Duration> {
    let ticks = machine_ticks()?;
    Ok(ticks_to_time(ticks[3] + ticks[4], ticks_per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_in_its_own_cpu_time() {
        let ticks = clock_ticks();
        let before = sched_time(Pid::This).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(sched_time(Pid::This).unwrap() > before);
        assert!(cpu_time(Pid::This, ticks).is_ok());
        assert!(machine_busy(ticks).unwrap() > Duration::ZERO);
        assert!(machine_idle(ticks).is_ok());
    }

    #[test]
    fn another_process_is_read_by_its_id() {
        let own = memory_kib(Pid::Of(std::process::id())).unwrap();
        assert!(own.rss > 0 && own.peak >= own.rss);
        assert!(memory_kib(Pid::Of(u32::MAX)).is_err());
    }
}
