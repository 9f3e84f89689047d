//! The live feed: what twins push to open browsers and scripts (the
//! `GET /api/stream` Server-Sent Events endpoint reads it).
//!
//! Machine twins publish three kinds of event, each serialised once as the
//! JSON the stream sends, whatever the number of subscribers:
//! - `asset`: state, alarms (with acknowledgements) and part counters, at
//!   once when any of them changes;
//! - `values`: every signal's live value, quality and window statistics, at
//!   most twice a second and only while some subscriber asked for that
//!   machine's values (a plant overview asks for none);
//! - nothing at all while nobody listens (no serialisation on the hot path).
//!
//! A subscriber that falls more than the channel's capacity behind is told
//! to resynchronise from the REST API instead of receiving stale events.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::assets::AssetIdx;

/// Which kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    /// State, alarms, counters of one machine.
    Asset,
    /// Signal values of one machine.
    Values,
}

impl LiveKind {
    /// The SSE `event:` name.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveKind::Asset => "asset",
            LiveKind::Values => "values",
        }
    }
}

/// One published event: the machine it is about and its JSON.
#[derive(Debug)]
pub struct LiveEvent {
    pub asset: AssetIdx,
    pub kind: LiveKind,
    pub json: Bytes,
}

/// The fan-out point between twins and subscribers.
pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Subscribers that want each machine's values.
    interest: Vec<AtomicU32>,
    published: AtomicU64,
    closed: tokio_util::sync::CancellationToken,
}

impl LiveHub {
    /// A hub for `assets` machines keeping `capacity` events for slow readers.
    pub fn new(assets: usize, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        LiveHub {
            tx,
            interest: (0..assets).map(|_| AtomicU32::new(0)).collect(),
            published: AtomicU64::new(0),
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Whether anybody listens at all.
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Whether some subscriber wants `asset`'s signal values.
    pub fn wants_values(&self, asset: AssetIdx) -> bool {
        self.interest
            .get(asset as usize)
            .is_some_and(|n| n.load(Ordering::Relaxed) > 0)
    }

    /// Publish (dropped when nobody listens).
    pub fn publish(&self, asset: AssetIdx, kind: LiveKind, json: Vec<u8>) {
        if self
            .tx
            .send(Arc::new(LiveEvent {
                asset,
                kind,
                json: Bytes::from(json),
            }))
            .is_ok()
        {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// End every subscription (the platform is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once the hub is closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Events published to at least one subscriber since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Subscribe; the values of `values_of` are published while the
    /// subscription lives.
    pub fn subscribe(self: &Arc<Self>, values_of: Vec<AssetIdx>) -> Subscription {
        for &a in &values_of {
            if let Some(n) = self.interest.get(a as usize) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        Subscription {
            rx: self.tx.subscribe(),
            hub: self.clone(),
            values_of,
        }
    }
}

/// A subscriber's end; dropping it withdraws its interest.
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<LiveEvent>>,
    pub hub: Arc<LiveHub>,
    values_of: Vec<AssetIdx>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for &a in &self.values_of {
            if let Some(n) = self.hub.interest.get(a as usize) {
                n.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_interest_lives_as_long_as_the_subscription() {
        let hub = Arc::new(LiveHub::new(3, 16));
        assert!(!hub.active());
        let s = hub.subscribe(vec![1]);
        assert!(hub.active() && hub.wants_values(1) && !hub.wants_values(0));
        let t = hub.subscribe(vec![1, 2]);
        drop(s);
        assert!(hub.wants_values(1) && hub.wants_values(2));
        drop(t);
        assert!(!hub.active() && !hub.wants_values(1));
    }

    #[tokio::test]
    async fn a_slow_subscriber_learns_it_lagged() {
        let hub = Arc::new(LiveHub::new(1, 16));
        let mut s = hub.subscribe(vec![]);
        for i in 0..40 {
            hub.publish(0, LiveKind::Asset, format!("{{\"n\":{i}}}").into_bytes());
        }
        assert!(matches!(
            s.rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        assert_eq!(hub.published(), 40);
    }
}
