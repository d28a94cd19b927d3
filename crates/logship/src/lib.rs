//! logship: the log sidecar. The data path, one module each: discover ([`discover`]) → read
//! ([`tail`], [`reader`], [`identity`]) → decode ([`decode`]) → batch ([`batch`]) → sinks
//! ([`sink`], each acknowledging) → checkpoint ([`checkpoint`], acknowledged offsets only).
//! [`run`] wires them together and owns the drain.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod discover;
pub mod identity;
pub mod metrics;
pub mod reader;
pub mod sink;
pub mod tail;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use podkit_runtime::admin::{Admin, Readiness};
use podkit_runtime::Shutdown;
use tokio::net::TcpListener;

use batch::{Batch, Encoder};
use checkpoint::{CheckpointError, Positions, Store};
pub use config::{Cli, Config, ConfigError};
use metrics::Metrics;
use sink::{Acks, SinkContext, SinkError};
use tail::{Ended, Tailer};

pub use podkit_runtime::cli::{EXIT_FAILURE, EXIT_USAGE};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the drain did not finish within --drain-timeout {0}; what was not acknowledged will be shipped again after a restart")]
    DrainTimeout(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Checkpoint(CheckpointError::NotWritable { .. }) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// Runs until drained (SIGTERM), `--oneshot` is done, or `--exit-on-file` appears. `admin` is
/// the listener for `--admin`, bound by the caller.
pub async fn run(
    config: Config,
    admin: Option<TcpListener>,
    mut shutdown: Shutdown,
) -> Result<Ended, RunError> {
    for (dir, pattern) in config.tail.globs.missing_dirs() {
        tracing::warn!(path = %pattern, dir = %dir.display(),
            "--path {pattern}: the directory {} does not exist; nothing is read from it until it appears (check the volume mount)", dir.display());
    }
    let store = Store::open(&config.checkpoint_dir, config.checkpoint_dir_given)?;
    let loaded = store.load();
    let positions = Arc::new(Positions::new(loaded.entries));
    let (metrics, registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let readiness = Readiness::default();
    if let Some(listener) = admin {
        let admin = Admin {
            registry: Arc::new(registry),
            readiness: readiness.clone(),
        };
        tokio::spawn(admin.serve(listener, shutdown.clone()));
    }

    let encoder = Encoder::new(config.output, &config.labels);
    let acks = Arc::new(Acks::new(
        config.sinks.len(),
        Arc::clone(&positions),
        Arc::clone(&metrics),
    ));
    let health = sink::delivery::Health::new(config.sinks.len(), readiness.clone());
    let mut senders = Vec::new();
    let mut sink_tasks = Vec::new();
    for (i, spec) in config.sinks.iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Arc<Batch>>(sink::QUEUE_BATCHES);
        if !spec.is_network() {
            health.slot(i).set_up(true);
        }
        let ctx = SinkContext {
            encoder: encoder.clone(),
            acks: Arc::clone(&acks),
            metrics: Arc::clone(&metrics),
            net: Arc::clone(&config.net),
            health: health.slot(i),
            shutdown: shutdown.clone(),
        };
        sink_tasks.push((spec.to_string(), sink::spawn(spec, rx, ctx)?));
        senders.push(tx);
    }
    let outlet_acks = Arc::clone(&acks);
    let outlet: tail::Outlet = Box::new(move |batch: Batch| {
        outlet_acks.register(&batch);
        let batch = Arc::new(batch);
        for tx in &senders {
            tx.blocking_send(Arc::clone(&batch)).map_err(|_| ())?;
        }
        Ok(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (wake_tx, wake_rx) = mpsc::sync_channel(1);
    let rescan = Arc::new(AtomicBool::new(false));
    let _watcher = discover::watch(
        &config.tail.globs,
        discover::Wakes {
            tx: wake_tx.clone(),
            rescan: Arc::clone(&rescan),
        },
    );
    let tailer = Tailer::new(
        config.tail.clone(),
        Arc::clone(&positions),
        Arc::clone(&metrics),
        outlet,
        tail::Control {
            stop: Arc::clone(&stop),
            wake: wake_rx,
            rescan,
        },
        loaded.first_start,
    );
    tracing::info!(
        paths = ?config.tail.globs.patterns(), sinks = ?config.sinks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        checkpoints = %store.path().display(), first_start = loaded.first_start,
        "logship started: checkpoints in {}", store.path().display()
    );
    let mut tail_task = tokio::task::spawn_blocking(move || tailer.run());
    health.set_running(true);

    let checkpointer = {
        let (store, positions, metrics) =
            (store.clone(), Arc::clone(&positions), Arc::clone(&metrics));
        let interval = config.checkpoint_interval;
        // Woken by every change of the positions (an acknowledgement, a file tracked or let
        // go), it saves at once unless a save started less than `interval` ago, and then saves
        // when that interval is up: a position reaches the file within `interval` (plus one
        // write) of its acknowledgement, and a busy sidecar writes at most once per interval.
        tokio::spawn(async move {
            let mut last = None::<tokio::time::Instant>;
            loop {
                positions.changed().await;
                if let Some(last) = last {
                    tokio::time::sleep_until(last + interval).await;
                }
                last = Some(tokio::time::Instant::now());
                // Logged and counted; the positions stay dirty, so the next round tries again.
                let _ = save(&store, &positions, &metrics, false).await;
            }
        })
    };

    let mut drain_deadline = None;
    let ended = tokio::select! {
        ended = &mut tail_task => ended,
        signal = shutdown.recv() => {
            tracing::info!(signal = ?signal, "stopping: reading what was written, shipping it, saving positions (within {})",
                podkit_runtime::units::format_duration(config.drain_timeout));
            health.set_running(false);
            stop.store(true, Ordering::SeqCst);
            let _ = wake_tx.try_send(());
            let deadline = tokio::time::Instant::now() + config.drain_timeout;
            drain_deadline = Some(deadline);
            match tokio::time::timeout_at(deadline, &mut tail_task).await {
                Ok(ended) => ended,
                Err(_) => {
                    // A periodic save still running finishes first (Store serializes them).
                    checkpointer.abort();
                    let _ = save(&store, &positions, &metrics, true).await;
                    return Err(RunError::DrainTimeout(podkit_runtime::units::format_duration(config.drain_timeout)));
                }
            }
        }
    }
    .map_err(|e| RunError::Internal(format!("the reader thread failed: {e}")))?;
    health.set_running(false);

    // The reader has sent its last batch and dropped the sink channels: wait for the sinks.
    let deadline =
        drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + config.drain_timeout);
    let mut failure = None;
    for (name, task) in sink_tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failure = Some(RunError::Sink(e)),
            Ok(Err(e)) => {
                failure = Some(RunError::Internal(format!("sink {name} task failed: {e}")))
            }
            Err(_) => {
                failure = Some(RunError::DrainTimeout(
                    podkit_runtime::units::format_duration(config.drain_timeout),
                ))
            }
        }
    }
    // A periodic save still running finishes first (Store serializes them). If the final save
    // fails, the last positions are lost and a restart ships their lines again: say so, and exit
    // non-zero.
    checkpointer.abort();
    if let Err(e) = save(&store, &positions, &metrics, true).await {
        failure.get_or_insert(RunError::Checkpoint(e));
    }
    if ended == Ended::SinksClosed && failure.is_none() {
        failure = Some(RunError::Internal(
            "the sinks stopped accepting batches".into(),
        ));
    }
    match failure {
        Some(e) => Err(e),
        None => {
            let shipped = metrics.lines_shipped.get();
            if shipped == 0 && config.tail.globs.scan().is_empty() {
                tracing::warn!(paths = ?config.tail.globs.patterns(),
                    "done: nothing was shipped, no file matches --path {}", config.tail.globs.patterns().join(", "));
            } else {
                tracing::info!(ended = ?ended, shipped, "done: {shipped} lines shipped");
            }
            Ok(ended)
        }
    }
}

/// Writes the checkpoint file if positions changed (or always, when `force`). A failed save is
/// logged and counted, and leaves the positions dirty so that the next save tries again.
async fn save(
    store: &Store,
    positions: &Positions,
    metrics: &Metrics,
    force: bool,
) -> Result<(), CheckpointError> {
    let snapshot = if force {
        Some(positions.snapshot())
    } else {
        positions.snapshot_if_dirty()
    };
    let Some(snapshot) = snapshot else {
        return Ok(());
    };
    let path = store.path().display().to_string();
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || store.save(&snapshot))
        .await
        .unwrap_or_else(|e| {
            Err(CheckpointError::Write {
                path,
                source: std::io::Error::other(format!("the checkpoint task failed: {e}")),
            })
        });
    match result {
        Ok(written) => {
            if written {
                metrics.checkpoint_writes.inc();
            }
            Ok(())
        }
        Err(e) => {
            positions.mark_dirty();
            metrics.checkpoint_errors.inc();
            tracing::error!(error = %e, "{e}");
            Err(e)
        }
    }
}
