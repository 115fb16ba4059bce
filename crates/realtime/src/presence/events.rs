//! The [`EventQueue`] port: the bounded queue of webhook events a presence store
//! fills and the webhook sender drains, at least once.

use realtime_core::PresenceEvent;

use crate::presence::store::PresenceFuture;

/// An event handed to this node for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The queue's handle for [`EventQueue::done`].
    pub key: String,
    pub event: PresenceEvent,
}

/// Webhook events waiting for delivery, shared by the cluster.
///
/// Contract: each event is handed to exactly one node at a time. An event handed
/// out stays claimed by that node while it is alive (its lease is renewed) until
/// [`done`](Self::done); if the node dies first, another node gets it again with
/// the same `id`. The queue holds at most `PresenceSettings::event_queue` events
/// and counts what it had to drop.
pub trait EventQueue: Send + Sync + 'static {
    /// Waits for the next event for this node to deliver.
    fn next(&self) -> PresenceFuture<QueuedEvent>;

    /// The event was delivered, or given up on: it is removed for good.
    fn done(&self, key: &str) -> PresenceFuture<()>;

    /// Events waiting (not yet handed out), cluster-wide where the store can
    /// tell cheaply.
    fn depth(&self) -> u64;

    /// Events dropped because the queue was full, since this node started.
    fn dropped(&self) -> u64;
}
