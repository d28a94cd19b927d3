//! Shutdown is a value: one [`Shutdown`] is cloned into every task, and a task that loops selects
//! on [`Shutdown::recv`]. SIGTERM and SIGINT are turned into it by [`Shutdown::from_signals`];
//! tests build one with [`Shutdown::new`] and fire it through the [`ShutdownTrigger`].

use tokio::sync::watch;

/// What asked us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
    /// Asked by the program itself (tests, `--oneshot`-style endings).
    Requested,
}

impl Signal {
    /// The conventional exit code of a process ended by this signal (128 + signal number).
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Terminate => 143,
            Signal::Interrupt => 130,
            Signal::Requested => 0,
        }
    }
}

/// A handle every task can await; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<Signal>>,
}

/// Fires the [`Shutdown`] it was made with.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<Option<Signal>>>,
}

impl ShutdownTrigger {
    /// Fires the shutdown; the first signal wins, later ones are ignored.
    pub fn fire(&self, signal: Signal) {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(signal);
                true
            } else {
                false
            }
        });
    }
}

impl Shutdown {
    /// A shutdown that fires only through the returned trigger.
    pub fn new() -> (Shutdown, ShutdownTrigger) {
        let (tx, rx) = watch::channel(None);
        (
            Shutdown { rx },
            ShutdownTrigger {
                tx: std::sync::Arc::new(tx),
            },
        )
    }

    /// A shutdown fired by SIGTERM or SIGINT. Must be called inside a tokio runtime.
    ///
    /// - The first SIGTERM or SIGINT starts the drain.
    /// - A second one during the drain ends the process at once (exit 143 or 130), with a
    ///   warning: the person pressing Ctrl-C twice, or an operator's second TERM, wants out now.
    /// - SIGHUP is logged and ignored: its default action would kill the process with no drain
    ///   (exit 129), and no binary reloads on it yet.
    pub fn from_signals() -> std::io::Result<(Shutdown, ShutdownTrigger)> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (shutdown, trigger) = Shutdown::new();
        let fire = trigger.clone();
        let seen = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let which = tokio::select! {
                    _ = term.recv() => Signal::Terminate,
                    _ = int.recv() => Signal::Interrupt,
                    _ = hup.recv() => {
                        tracing::warn!("SIGHUP ignored: nothing is reloaded on it yet; SIGTERM stops with a drain");
                        continue;
                    }
                };
                if let Some(first) = seen.fired() {
                    tracing::warn!(first = ?first, second = ?which,
                        "a second stop signal during the drain: exiting now, without finishing it");
                    // The one hard exit: nothing else may run once the user asked twice.
                    std::process::exit(which.exit_code());
                }
                fire.fire(which);
            }
        });
        Ok((shutdown, trigger))
    }

    /// The signal, if shutdown has fired.
    pub fn fired(&self) -> Option<Signal> {
        *self.rx.borrow()
    }

    /// Resolves when shutdown fires, with the signal that fired it. If every trigger is gone
    /// without firing, this never resolves (nobody can ask us to stop any more).
    pub async fn recv(&mut self) -> Signal {
        loop {
            if let Some(signal) = *self.rx.borrow_and_update() {
                return signal;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_first_signal() {
        let (shutdown, trigger) = Shutdown::new();
        let mut a = shutdown.clone();
        let mut b = shutdown.clone();
        assert_eq!(shutdown.fired(), None);
        trigger.fire(Signal::Interrupt);
        trigger.fire(Signal::Terminate);
        assert_eq!(a.recv().await, Signal::Interrupt);
        assert_eq!(b.recv().await, Signal::Interrupt);
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
    }
}
