//! Upgraded connections (WebSocket and other tunnels). Once the upstream answers 101, hyper
//! hands both sides' bytes over and the client connection's own task ends; from then on the
//! tunnel is counted here, so that `/metrics` still shows it as open and the drain still waits
//! for it: until it ends by itself (the app closes it, as it drains too) or, at
//! `--drain-timeout`, it is closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

/// The tunnels open now, and the drain's order to close them.
#[derive(Debug)]
pub struct Tunnels {
    open: AtomicUsize,
    close: watch::Sender<bool>,
    /// Client connections open now, tunnels included.
    connections: Gauge,
    /// Tunnels open now.
    upgraded: Gauge,
}

/// One open tunnel: counted until dropped.
#[derive(Debug)]
pub struct Tunnel {
    tunnels: Arc<Tunnels>,
    close: watch::Receiver<bool>,
}

impl Tunnels {
    pub fn new(connections: Gauge, upgraded: Gauge) -> Tunnels {
        Tunnels {
            open: AtomicUsize::new(0),
            close: watch::channel(false).0,
            connections,
            upgraded,
        }
    }

    /// Counts a tunnel from now until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> Tunnel {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.connections.inc();
        self.upgraded.inc();
        Tunnel {
            tunnels: Arc::clone(self),
            close: self.close.subscribe(),
        }
    }

    /// How many are open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Asks every tunnel, open now or opened later, to close; returns how many were open.
    pub fn close_all(&self) -> usize {
        self.close.send_replace(true);
        self.count()
    }
}

impl Tunnel {
    /// Ready once the drain asks the tunnels to close.
    pub async fn closed(&mut self) {
        // Err only if the sender is gone, and every tunnel holds it.
        let _ = self.close.wait_for(|close| *close).await;
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.tunnels.open.fetch_sub(1, Ordering::SeqCst);
        self.tunnels.connections.dec();
        self.tunnels.upgraded.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tunnels_are_counted_while_open_and_closed_on_the_drains_order() {
        let (connections, upgraded) = (Gauge::default(), Gauge::default());
        let tunnels = Arc::new(Tunnels::new(connections.clone(), upgraded.clone()));
        let mut first = tunnels.open();
        let second = tunnels.open();
        assert_eq!(tunnels.count(), 2);
        assert_eq!((connections.get(), upgraded.get()), (2, 2));
        drop(second);
        assert_eq!(tunnels.count(), 1);
        assert_eq!((connections.get(), upgraded.get()), (1, 1));
        // Not asked yet: still open.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), first.closed()).await;
        assert!(waited.is_err(), "closed before the drain asked");
        assert_eq!(tunnels.close_all(), 1);
        first.closed().await;
        // One opened after the order is closed at once.
        let mut late = tunnels.open();
        late.closed().await;
        drop((first, late));
        assert_eq!(tunnels.count(), 0);
        assert_eq!((connections.get(), upgraded.get()), (0, 0));
    }
}
