//! Presence in the shell: the [`PresenceStore`] port (who is subscribed to each
//! presence topic, who is online, node leases) and the [`EventQueue`] port the
//! webhook sender drains, plus what the engine builds on them.

pub mod api;
pub(crate) mod engine;
pub mod events;
pub mod memory;
pub mod store;

pub use api::{
    DEFAULT_PRESENCE_LIMIT, MAX_PRESENCE_LIMIT, OnlineStats, PRESENCE_CURSOR_PATTERN,
    PresenceConnection, PresenceQuery, PresenceQueryError, PresenceStats, PresenceUser,
    TopicPresence, UserPresence,
};
pub use events::{EventQueue, QueuedEvent};
pub use memory::MemoryPresence;
pub use store::{
    ClusterCounts, Member, MemberPage, PresenceError, PresenceFuture, PresenceNotice,
    PresenceSettings, PresenceSink, PresenceSnapshot, PresenceStore, SnapshotFn, TopicCounts,
    UserStatus,
};
