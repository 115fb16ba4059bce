//! The [`PresenceStore`] port: per-topic members, cluster-wide online status and
//! the node lease that makes a dead node's entries disappear. Adapters: the
//! in-memory store (one node, or engines sharing a [`MemoryHub`](crate::MemoryHub))
//! and Redis (`realtime-redis`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use realtime_core::{ConnectionId, LeaseRules, Topic};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cluster::bus::BusStatus;
use crate::presence::events::EventQueue;

/// Why the store could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// The store cannot be reached right now (Redis is down).
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Resolves to a store's answer.
pub type PresenceFuture<T> = Pin<Box<dyn Future<Output = Result<T, PresenceError>> + Send>>;

/// One connection subscribed to a presence topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub connection_id: ConnectionId,
    /// RFC 3339, as in the connection's welcome.
    pub connected_at: String,
    /// The connection's token metadata claims.
    pub info: Map<String, Value>,
}

/// A page of a topic's members, ordered by `(user_id, connection_id)` (byte order
/// of the user id, then of the connection id's hyphenated text).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemberPage {
    pub members: Vec<Member>,
    /// Pass as `after` for the next page; `None`: this was the last one. Opaque
    /// to callers, stable across nodes (any node continues any node's cursor).
    pub next: Option<String>,
}

/// How many are in a topic, counted without listing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicCounts {
    pub connections: u64,
    /// Distinct users among those connections.
    pub users: u64,
}

/// One user's online status across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserStatus {
    /// Connections of the user on every live node.
    pub connections: u64,
    /// When the user's last connection closed (ms since the Unix epoch), if the
    /// store remembers (Redis: 30 days). `None` while online or never seen.
    pub last_seen_ms: Option<u64>,
}

/// Online users and connections across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterCounts {
    pub users: u64,
    pub connections: u64,
}

/// What the store tells the engine that started it.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceNotice {
    /// Another node's lease expired and this node removed everything that node
    /// had written (exactly one surviving node gets this per dead node). The
    /// engine sends `leave` frames for them on join/leave topics. A store also
    /// sends it with its own `node` when it removes entries of this node the
    /// engine no longer holds (an earlier run under the same node id, killed
    /// before its lease ran out; connections that closed while the store was
    /// unreachable); their `connected_at` and `info` may then be empty.
    Reaped {
        node: String,
        left: Vec<(Topic, Member)>,
    },
    /// This node's own entries were found gone (its lease expired while it was
    /// cut off and another node reaped it, or the store lost its data) and were
    /// written again from the snapshot: the rest of the cluster saw these members
    /// leave, so the engine sends `join` frames for them.
    Restored { joined: Vec<(Topic, Member)> },
}

/// Where a store hands its notices.
pub type PresenceSink = Arc<dyn Fn(PresenceNotice) + Send + Sync>;

/// This node's presence as it is now, for a store that has to write it again.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PresenceSnapshot {
    /// Every local connection: `(user_id, connection_id)`.
    pub connections: Vec<(String, ConnectionId)>,
    /// Every local membership of a presence topic.
    pub members: Vec<(Topic, Member)>,
}

/// Reads the engine's live state.
pub type SnapshotFn = Arc<dyn Fn() -> PresenceSnapshot + Send + Sync>;

/// How a store runs, from the engine's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    /// Lease length, heartbeat and the bound on a dead node's entries.
    pub lease: LeaseRules,
    /// How long a user (topic) must stay without connections (members) before
    /// `user.offline` (`topic.vacated`) is queued.
    pub offline_grace: Duration,
    /// Whether to queue webhook events at all (a webhook URL is configured).
    pub events: bool,
    /// Most events waiting for delivery; past it new events are dropped and
    /// counted.
    pub event_queue: usize,
}

impl PresenceSettings {
    pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_OFFLINE_GRACE: Duration = Duration::from_secs(5);
    pub const DEFAULT_EVENT_QUEUE: usize = 10_000;
}

impl Default for PresenceSettings {
    fn default() -> Self {
        PresenceSettings {
            lease: LeaseRules::new(Self::DEFAULT_NODE_TIMEOUT).expect("10 s is a valid bound"),
            offline_grace: Self::DEFAULT_OFFLINE_GRACE,
            events: false,
            event_queue: Self::DEFAULT_EVENT_QUEUE,
        }
    }
}

/// Keeps who is in each presence topic and who is online, for every node.
///
/// Contract:
/// - Writes (`connected` … `left`) are taken when called, so a caller may drop
///   the future; one node's writes are applied in the order requested. The work
///   per write does not grow with the topic's or the cluster's size.
/// - Everything a node writes hangs off its lease, which the store renews every
///   `settings.lease.heartbeat()` after `start`. When a lease expires, one
///   surviving node removes what the dead node wrote (its connections count as
///   closed for online status and events) and gets [`PresenceNotice::Reaped`];
///   nothing of it stays behind. A dead node is gone from every answer within
///   `settings.lease.bound()` while some node of the cluster is alive.
/// - `members` pages are in `(user_id, connection_id)` order; every member
///   present for the whole walk is returned exactly once.
/// - `topic_counts`, `user` and `counts` cost the same whatever the topic's or
///   the cluster's size.
/// - With `settings.events`, the store queues [`realtime_core::PresenceEvent`]s
///   on the [`EventQueue`] it returns from [`events`](Self::events): `user.online`
///   when a user's connections across the cluster go from 0 to 1 and no
///   `user.online` is outstanding (a reconnect within the grace emits nothing),
///   `user.offline` once the count stayed 0 for `offline_grace`; the same for
///   topics (`topic.occupied` / `topic.vacated`, on members). Exactly one node
///   queues each event, and an event whose trigger was a dead node's leave is
///   queued by a survivor.
pub trait PresenceStore: Send + Sync + 'static {
    /// Called once by the engine: starts the lease for `node` (unique in the
    /// cluster) and the periodic work (renewal, looking for dead nodes, due
    /// offline events). `snapshot` is read whenever the store has to write this
    /// node's entries again; `sink` receives notices.
    fn start(
        &self,
        node: String,
        settings: PresenceSettings,
        snapshot: SnapshotFn,
        sink: PresenceSink,
    );

    /// A connection of `user_id` opened on this node (online status).
    fn connected(&self, user_id: &str, connection: ConnectionId) -> PresenceFuture<()>;

    /// A connection of `user_id` on this node closed.
    fn disconnected(&self, user_id: &str, connection: ConnectionId) -> PresenceFuture<()>;

    /// A connection on this node subscribed to a presence topic.
    fn joined(&self, topic: &Topic, member: Member) -> PresenceFuture<()>;

    /// A connection on this node left a presence topic (unsubscribed or closed).
    fn left(&self, topic: &Topic, user_id: &str, connection: ConnectionId) -> PresenceFuture<()>;

    /// At most `limit` members of `topic` after the cursor `after`.
    fn members(
        &self,
        topic: &Topic,
        after: Option<String>,
        limit: usize,
    ) -> PresenceFuture<MemberPage>;

    fn topic_counts(&self, topic: &Topic) -> PresenceFuture<TopicCounts>;

    fn user(&self, user_id: &str) -> PresenceFuture<UserStatus>;

    fn counts(&self) -> PresenceFuture<ClusterCounts>;

    /// Graceful shutdown: removes this node's entries now (its connections count
    /// as closed) and gives up its lease.
    fn leave(&self) -> PresenceFuture<()>;

    /// Whether answers are current. While down, the engine answers from this
    /// node's own connections and says the answer is degraded.
    fn status(&self) -> BusStatus;

    /// The queue webhook events go to, once started with `settings.events`.
    fn events(&self) -> Option<Arc<dyn EventQueue>>;

    /// Registers the store's own metrics, if any.
    fn register_metrics(&self, _registry: &mut Registry) {}
}
