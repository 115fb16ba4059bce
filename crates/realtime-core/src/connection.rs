//! What the server knows about one connection, independent of its socket.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use crate::identity::Identity;

/// How a connection reaches the server. A connection of either transport is
/// listed, counted and targeted alike; only what it can send differs (an SSE
/// stream only receives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A WebSocket (`GET /ws`): receives frames and sends commands.
    #[default]
    Websocket,
    /// Server-Sent Events (`GET /sse`): receives frames as events; its topics are
    /// chosen when it opens.
    Sse,
}

impl Transport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

/// A connection's id: a random UUID given at accept time.
pub type ConnectionId = Uuid;

/// An accepted, authenticated connection: who it is and when it arrived.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub id: ConnectionId,
    pub user_id: Arc<str>,
    pub roles: Arc<[Arc<str>]>,
    /// Claims other than the registered ones, kept as connection metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// RFC 3339 UTC time of accept.
    pub connected_at: String,
    pub transport: Transport,
}

impl ConnectionInfo {
    /// Builds the record for a newly accepted WebSocket connection.
    pub fn new(id: ConnectionId, identity: Identity, connected_at: String) -> Self {
        ConnectionInfo {
            id,
            user_id: identity.user_id.into(),
            roles: identity.roles.into_iter().map(Arc::from).collect(),
            metadata: identity.metadata,
            connected_at,
            transport: Transport::Websocket,
        }
    }

    /// The same record for a connection of another transport.
    pub fn with_transport(self, transport: Transport) -> Self {
        ConnectionInfo { transport, ..self }
    }

    /// Whether the connection holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| &**r == role)
    }
}
