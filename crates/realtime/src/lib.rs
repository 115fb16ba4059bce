//! Boundary Realtime as an embeddable library: realtime messaging over WebSocket
//! (and Server-Sent Events, for clients that only listen) for axum applications.
//!
//! Mount a route, then reach connections from business code by user, role,
//! connection, broadcast or topic:
//!
//! ```no_run
//! use realtime::{JwtVerifier, Realtime, RealtimeConfig};
//! use realtime_core::ClaimRules;
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = JwtVerifier::hs256(b"change-me", ClaimRules::default())?;
//! let rt = Realtime::new(verifier, RealtimeConfig::default());
//! let app = axum::Router::new()
//!     .route("/ws", rt.websocket_route())
//!     .route("/sse", rt.sse_route());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! rt.publish("order:123", json!({"type": "order-updated", "status": "shipped"}))?;
//! # Ok(()) }
//! ```

mod auth;
mod authorize;
pub mod cluster;
mod commands;
mod config;
mod control;
mod error;
mod handle;
mod handshake;
mod heartbeat;
pub mod history;
pub mod hooks;
mod metrics;
mod opening;
mod outbox;
pub mod presence;
mod registry;
mod service;
mod session;
mod sse;
pub mod testing;
mod writer;
mod ws;

pub use auth::{JwtAlgorithm, JwtVerifier, KeyError, TokenVerifier, unix_seconds};
pub use cluster::bus::{
    BusError, BusEvent, BusStatus, ClusterDirectory, ConnectionKey, ConnectionPage, DirectoryEntry,
    MessageBus, Page, PageRequest, TopicPage,
};
pub use cluster::memory::MemoryHub;
pub use cluster::{ClusterConfig, ClusterError};
pub use config::RealtimeConfig;
pub use error::{SendError, SubscribeError};
pub use history::{
    HistoryError, HistoryQuery, HistoryQueryError, HistoryStore, MemoryHistory, TopicHistory,
};
pub use hooks::{
    Admission, ConnectHook, ConnectRequest, HookRefusal, Hooks, PublishHook, PublishVerdict,
    RefusalKind, SubscribeHook,
};
pub use presence::{
    EventQueue, Member, MemoryPresence, OnlineStats, PresenceError, PresenceQuery,
    PresenceQueryError, PresenceStats, PresenceStore, TopicPresence, UserPresence,
};
pub use realtime_core;
pub use realtime_core::{ClaimRules, CloseCode, ConnectionId, ControlReply, NodeTag, Route, Topic};
pub use service::{ConnectionSummary, Delivery, Realtime, Stats};
pub use sse::StreamAbort;
