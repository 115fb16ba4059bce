//! The ports a multi-node deployment plugs in: [`MessageBus`] carries envelopes
//! between nodes, [`ClusterDirectory`] keeps the cluster-wide view of connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::service::ConnectionSummary;

/// Receives every envelope that arrives on a channel this node subscribed to.
pub type Inbox = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Resolves once the bus has carried out an operation (or could not).
pub type BusFuture = Pin<Box<dyn Future<Output = Result<(), BusError>> + Send>>;

/// Resolves to how many nodes received a published envelope.
pub type CountFuture = Pin<Box<dyn Future<Output = Result<usize, BusError>> + Send>>;

/// Why the bus could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
}

/// Whether messages can flow between nodes right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BusStatus {
    Up,
    Down { reason: String },
}

/// Carries envelopes between nodes. Implementations: the in-memory hub (several
/// engines in one process) and Redis pub/sub (`realtime-redis`).
///
/// Ordering contract: envelopes handed to [`publish`](Self::publish) by one node are
/// received by every other node in the order they were published, and interest
/// changes take effect in the order they were requested.
pub trait MessageBus: Send + Sync + 'static {
    /// Called once by the engine. From then on every envelope received on a
    /// subscribed channel goes to `inbox`; `always` (the node's own channel and the
    /// broadcast channel) stay subscribed for the life of the bus.
    fn start(&self, inbox: Inbox, always: Vec<String>);

    /// Hands an encoded envelope to the bus for `channel`. Never waits. Fails at
    /// once while the bus is known to be down, so callers can report it.
    fn publish(&self, channel: String, envelope: Vec<u8>) -> Result<(), BusError>;

    /// As [`publish`](Self::publish), in the same order, and resolves to the number
    /// of nodes that received the envelope (0: no node listens on `channel`).
    fn publish_counted(&self, channel: String, envelope: Vec<u8>) -> CountFuture;

    /// Subscribes and unsubscribes channels. The change is recorded at once (and
    /// re-applied after every reconnect); the future resolves when it is active.
    fn update_interest(&self, subscribe: Vec<String>, unsubscribe: Vec<String>) -> BusFuture;

    fn status(&self) -> BusStatus;
}

/// One connection as the cluster directory records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The node label (`REALTIME_NODE_ID`) of the node holding the connection.
    pub node: String,
    #[serde(flatten)]
    pub connection: ConnectionSummary,
}

/// Everything this node would write to a fresh directory (used to resync after the
/// directory's store lost its data, e.g. a Redis restart).
pub type Snapshot = Arc<dyn Fn() -> Vec<DirectoryEntry> + Send + Sync>;

/// A boxed future yielding a directory listing.
pub type ListFuture = Pin<Box<dyn Future<Output = Result<Vec<DirectoryEntry>, BusError>> + Send>>;

/// The cluster-wide view of connections, with expiry: a node that stops
/// refreshing its records disappears from the view within a bounded time.
pub trait ClusterDirectory: Send + Sync + 'static {
    /// Called once by the engine with this node's label and a way to read its state.
    fn start(&self, node: String, snapshot: Snapshot);
    /// Records or replaces a connection. Ordered with `remove`.
    fn upsert(&self, entry: DirectoryEntry) -> BusFuture;
    fn remove(&self, connection: uuid::Uuid) -> BusFuture;
    /// Every connection on every live node.
    fn list(&self) -> ListFuture;
    /// Removes this node's records (graceful shutdown).
    fn leave(&self) -> BusFuture;
    /// Whether records can be written and listed right now. While it is down the
    /// cluster views are wrong or unavailable, so `/health` reports it.
    fn status(&self) -> BusStatus;
}
