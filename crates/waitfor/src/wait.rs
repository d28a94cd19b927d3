//! The wait itself: one task per target, probing with backoff until it has had `success_count`
//! consecutive successes; all of them (or any one, with `--any`) must get there before the
//! deadline. The deadline holds exactly: each attempt is capped at the time left, and the
//! deadline ends the wait even mid-attempt. A shutdown signal ends it at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use podkit_runtime::units::format_duration;
use podkit_runtime::{Shutdown, Signal};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{Config, Mode};
use crate::probe::{self, ProbeError, ProbeSettings};
use crate::target::Target;

/// How often a target that is still not ready is reported at info level.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// How the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every target (or, with `--any`, one) is ready.
    Ready,
    /// The deadline passed; these targets were still not ready.
    TimedOut(Vec<Pending>),
    /// SIGTERM or SIGINT arrived first.
    Interrupted(Signal),
}

/// A target that was not ready when the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub target: String,
    pub attempts: u32,
    pub last_error: Option<ProbeError>,
}

#[derive(Debug, Default)]
struct Progress {
    attempts: u32,
    last_error: Option<ProbeError>,
    ready: bool,
}

type Shared = Arc<Mutex<Progress>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Progress> {
    // Progress is plain data, valid after any panic, so a poisoned lock is still usable.
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits as `config` says, until ready, timed out or interrupted.
pub async fn run(config: Config, mut shutdown: Shutdown) -> Outcome {
    let start = Instant::now();
    let deadline = config.timeout.map(|t| start + t);
    log_start(&config);

    let progress: Vec<Shared> = config.targets.iter().map(|_| Shared::default()).collect();
    let settings = Arc::new(config.probe.clone());
    let mut tasks = JoinSet::new();
    for (target, shared) in config.targets.iter().zip(&progress) {
        let waiter = Waiter {
            target: target.clone(),
            settings: Arc::clone(&settings),
            progress: Arc::clone(shared),
            attempt_timeout: config.attempt_timeout,
            max_interval: config.max_interval,
            success_count: config.success_count,
            start,
            deadline,
        };
        tasks.spawn(waiter.run());
    }
    let needed = match config.mode {
        Mode::All => config.targets.len(),
        Mode::Any => 1,
    };

    let mut ready = 0;
    loop {
        tokio::select! {
            biased;
            signal = shutdown.recv() => {
                tasks.abort_all();
                tracing::warn!(signal = ?signal, "interrupted by {} while waiting; exiting", signal_name(signal));
                return Outcome::Interrupted(signal);
            }
            joined = tasks.join_next() => match joined {
                Some(Ok(true)) => {
                    ready += 1;
                    if ready >= needed {
                        tasks.abort_all();
                        let elapsed = format_duration(start.elapsed());
                        tracing::info!(elapsed = %elapsed, "ready: {} after {elapsed}", match config.mode {
                            Mode::All => "all targets",
                            Mode::Any => "a target (--any)",
                        });
                        return Outcome::Ready;
                    }
                }
                // A waiter that returns false met the deadline; a panicked one is never ready.
                Some(Ok(false)) => {}
                Some(Err(err)) => tracing::error!(error = %err, "a target's waiter failed"),
                None => break,
            },
        }
    }
    // Every waiter has ended and too few were ready: the deadline has passed.
    let pending = pending_targets(&config.targets, &progress);
    let waited = config.timeout.map(format_duration).unwrap_or_default();
    for p in &pending {
        let (class, error) = match &p.last_error {
            Some(e) => (e.class(), e.to_string()),
            None => ("timeout", "no attempt finished".to_string()),
        };
        tracing::error!(
            target = %p.target, class, error = %error, attempts = p.attempts,
            "timed out after {waited} waiting for {}: last error: {error} ({} attempts)",
            p.target, p.attempts
        );
    }
    Outcome::TimedOut(pending)
}

fn pending_targets(targets: &[Target], progress: &[Shared]) -> Vec<Pending> {
    targets
        .iter()
        .zip(progress)
        .filter_map(|(t, p)| {
            let p = lock(p);
            (!p.ready).then(|| Pending {
                target: t.to_string(),
                attempts: p.attempts,
                last_error: p.last_error.clone(),
            })
        })
        .collect()
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Terminate => "SIGTERM",
        Signal::Interrupt => "SIGINT",
        Signal::Requested => "request",
    }
}

fn log_start(config: &Config) {
    let targets: Vec<String> = config.targets.iter().map(ToString::to_string).collect();
    let timeout = config
        .timeout
        .map(format_duration)
        .unwrap_or_else(|| "none (wait forever)".into());
    let then = if config.command.is_empty() {
        "exit 0".to_string()
    } else {
        format!("exec {}", config.command[0].to_string_lossy())
    };
    tracing::info!(
        targets = ?targets,
        timeout = %timeout,
        attempt_timeout = %format_duration(config.attempt_timeout),
        max_interval = %format_duration(config.max_interval),
        success_count = config.success_count,
        mode = if config.mode == Mode::All { "all" } else { "any" },
        "waiting for {} of {}: timeout {timeout}, attempt timeout {}, max interval {}, success count {}; then {then}",
        if config.mode == Mode::All { "all" } else { "any" },
        targets.join(" "),
        format_duration(config.attempt_timeout),
        format_duration(config.max_interval),
        config.success_count,
    );
}

struct Waiter {
    target: Target,
    settings: Arc<ProbeSettings>,
    progress: Shared,
    attempt_timeout: Duration,
    max_interval: Duration,
    success_count: u32,
    start: Instant,
    deadline: Option<Instant>,
}

impl Waiter {
    /// Returns true once the target is ready, false when the deadline has passed first. Every
    /// attempt and every pause is capped at the time left, so this returns at the deadline.
    async fn run(self) -> bool {
        let mut backoff = Backoff::new(self.max_interval);
        let mut successes = 0u32;
        let mut last_report = self.start;
        let name = self.target.to_string();
        loop {
            let left = self.time_left();
            if left.is_zero() {
                return false;
            }
            let cap = self.attempt_timeout.min(left);
            let result =
                match tokio::time::timeout(cap, probe::check(&self.target, &self.settings)).await {
                    Ok(r) => r,
                    Err(_) => Err(ProbeError::TimedOut),
                };
            let attempts = {
                let mut p = lock(&self.progress);
                p.attempts += 1;
                if let Err(e) = &result {
                    p.last_error = Some(e.clone());
                }
                p.attempts
            };
            match result {
                Ok(detail) => {
                    successes += 1;
                    tracing::debug!(target = %name, attempt = attempts, "attempt succeeded: {detail}");
                    if successes >= self.success_count {
                        lock(&self.progress).ready = true;
                        let elapsed = format_duration(self.start.elapsed());
                        tracing::info!(
                            target = %name, elapsed = %elapsed, attempts,
                            "ready: {name} after {elapsed} ({attempts} attempts): {detail}"
                        );
                        return true;
                    }
                }
                Err(err) => {
                    successes = 0;
                    tracing::debug!(target = %name, attempt = attempts, class = err.class(), error = %err, "attempt failed: {err}");
                    if last_report.elapsed() >= REPORT_EVERY {
                        last_report = Instant::now();
                        let elapsed = format_duration(self.start.elapsed());
                        tracing::info!(
                            target = %name, class = err.class(), error = %err, attempts,
                            "still waiting for {name} after {elapsed}: {err} ({attempts} attempts)"
                        );
                    }
                }
            }
            tokio::time::sleep(backoff.next_interval().min(self.time_left())).await;
        }
    }

    fn time_left(&self) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        }
    }
}
