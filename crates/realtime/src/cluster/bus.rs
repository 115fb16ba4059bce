//! The ports a multi-node deployment plugs in: [`MessageBus`] carries envelopes
//! between nodes, [`ClusterDirectory`] keeps the cluster-wide view of connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::service::ConnectionSummary;

/// What a bus hands to the engine, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusEvent<'a> {
    /// An envelope (or a history publication) that arrived on a subscribed channel.
    Envelope(&'a [u8]),
    /// The bus's receiving side was (re)established after a break, or discarded
    /// envelopes it could not keep: anything published meanwhile did not arrive.
    /// Handed over before anything received after the break.
    Resumed,
    /// After a [`Resumed`](Self::Resumed): every channel is subscribed again, so
    /// whatever was published before this either arrived or can be read from the
    /// history store now (a read made at `Resumed` may have been too early). A bus
    /// that is subscribed again before it resumes need not send it.
    Resubscribed,
}

/// Receives every envelope that arrives on a channel this node subscribed to, and
/// every [`BusEvent::Resumed`].
pub type Inbox = Arc<dyn Fn(BusEvent<'_>) + Send + Sync>;

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

    /// Resolves once every envelope handed to [`publish`](Self::publish) (or
    /// [`publish_counted`](Self::publish_counted)) before the call has been handed to
    /// the transport, so a stopping node can wait for its queue to drain. The
    /// default resolves at once: right for a bus that delivers synchronously.
    fn flush(&self) -> BusFuture {
        Box::pin(async { Ok(()) })
    }

    /// Adds the bus's own metrics (backlog, links, traffic) to `registry`; the
    /// engine's [`register_metrics`](crate::Realtime::register_metrics) calls it.
    /// The default registers nothing.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}

/// One connection as the cluster directory records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryEntry {
    /// The node label (`REALTIME_NODE_ID`) of the node holding the connection.
    pub node: String,
    #[serde(flatten)]
    pub connection: ConnectionSummary,
}

/// Everything this node would write to a fresh directory (used to resync after the
/// directory's store lost its data, e.g. a Redis restart).
pub type Snapshot = Arc<dyn Fn() -> Vec<DirectoryEntry> + Send + Sync>;

/// Where a page of a cluster view starts and how long it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    /// Most entries in the page (at least 1).
    pub limit: usize,
    /// The key of the last entry of the previous page; `None` for the first page.
    pub after: Option<K>,
}

/// One page of a cluster view, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<K>,
}

impl<T, K: Ord> Page<T, K> {
    /// Cuts the requested page out of entries sorted by key.
    pub fn from_sorted(entries: impl IntoIterator<Item = (K, T)>, request: PageRequest<K>) -> Self {
        let limit = request.limit.max(1);
        let mut items = Vec::new();
        let mut last = None;
        for (key, item) in entries {
            if request.after.as_ref().is_some_and(|after| &key <= after) {
                continue;
            }
            if items.len() == limit {
                return Page { items, next: last };
            }
            items.push(item);
            last = Some(key);
        }
        Page { items, next: None }
    }
}

/// The order of the connections view: node label, then connection id.
pub type ConnectionKey = (String, uuid::Uuid);

/// A page of the connections view.
pub type ConnectionPage = Page<DirectoryEntry, ConnectionKey>;

/// A page of the topics view: (topic, subscribers on every node), keyed by topic.
pub type TopicPage = Page<(String, usize), String>;

/// A boxed future yielding a page of connections.
pub type ListFuture = Pin<Box<dyn Future<Output = Result<ConnectionPage, BusError>> + Send>>;

/// A boxed future yielding a page of topics.
pub type TopicsFuture = Pin<Box<dyn Future<Output = Result<TopicPage, BusError>> + Send>>;

/// The cluster-wide view of connections, with expiry: a node that stops
/// refreshing its records disappears from the view within a bounded time.
///
/// Changes from one node are applied in the order they were requested.
pub trait ClusterDirectory: Send + Sync + 'static {
    /// Called once by the engine with this node's label and a way to read its state.
    fn start(&self, node: String, snapshot: Snapshot);
    /// Records a connection with the topics it holds (on connect).
    fn upsert(&self, entry: DirectoryEntry) -> BusFuture;
    fn remove(&self, connection: uuid::Uuid) -> BusFuture;
    /// Records one more topic of a connection: one small update, however many
    /// topics the connection already holds.
    fn add_topic(&self, connection: uuid::Uuid, topic: String) -> BusFuture;
    /// Records that a connection left one topic.
    fn remove_topic(&self, connection: uuid::Uuid, topic: String) -> BusFuture;
    /// A page of the connections on every live node, ordered by [`ConnectionKey`].
    fn list(&self, page: PageRequest<ConnectionKey>) -> ListFuture;
    /// A page of the topics with subscribers on any live node, ordered by name.
    fn topics(&self, page: PageRequest<String>) -> TopicsFuture;
    /// Removes this node's records (graceful shutdown).
    fn leave(&self) -> BusFuture;
    /// Whether records can be written and listed right now. While it is down the
    /// cluster views are wrong or unavailable, so `/health` reports it.
    fn status(&self) -> BusStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(limit: usize, after: Option<u32>) -> Page<char, u32> {
        Page::from_sorted([(1, 'a'), (2, 'b'), (3, 'c')], PageRequest { limit, after })
    }

    #[test]
    fn pages_cut_sorted_entries_after_the_cursor() {
        let first = page(2, None);
        assert_eq!((first.items, first.next), (vec!['a', 'b'], Some(2)));
        let last = page(2, Some(2));
        assert_eq!((last.items, last.next), (vec!['c'], None));
        // A page with room for everything that is left is the last one.
        assert_eq!(page(3, None).next, None);
        assert_eq!(page(5, Some(3)).items, Vec::<char>::new());
        // A zero limit still makes progress.
        assert_eq!(page(0, None).items, vec!['a']);
    }
}
