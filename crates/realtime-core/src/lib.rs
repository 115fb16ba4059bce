//! Pure domain core of Boundary Realtime: every routing, auth and protocol decision,
//! with no I/O, no clock and no randomness (time is always an argument).
//!
//! The shell crate (`realtime`) owns sockets, tasks and the registry; it asks this
//! crate what a token means, whether a topic is valid and allowed, how a client
//! frame decodes and how a message is shaped before it is serialized once.

pub mod close;
pub mod connection;
pub mod envelope;
pub mod history;
pub mod identity;
pub mod message;
pub mod origin;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod route;
pub mod sse;
pub mod token;
pub mod topic;

pub use close::CloseCode;
pub use connection::{ConnectionId, ConnectionInfo, Transport};
pub use envelope::{Body, Channels, ControlOp, ControlReply, Envelope, NodeTag};
pub use history::{HistoryLimits, Position, StreamState};
pub use identity::{AuthError, ClaimRules, Identity};
pub use message::{MessageError, PreparedMessage};
pub use origin::OriginPolicy;
pub use policy::{
    Access, Namespace, PolicyError, PresenceMode, ProxyUse, PublishRule, Rules, TopicPolicy,
};
pub use presence::{EventKind, LeaseRules, PresenceEvent};
pub use protocol::{Command, ErrorCode, ProtocolError, ServerFrame};
pub use ratelimit::RateLimit;
pub use route::Route;
pub use topic::{InvalidTopic, Topic};
