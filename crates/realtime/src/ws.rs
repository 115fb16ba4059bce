//! The WebSocket endpoint: admit the handshake (crate::handshake) before the
//! upgrade, then hand the socket to its session task. A refused handshake gets a
//! status with a JSON reason and leaves nothing registered.

use axum::Json;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use realtime_core::Transport;
use serde::Deserialize;
use serde_json::json;

use crate::handshake::{HandshakeHeaders, admit};
use crate::service::Realtime;
use crate::session;

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

impl Realtime {
    /// The `GET` route that accepts WebSocket connections; mount it where you like:
    /// `Router::new().route("/ws", rt.websocket_route())`.
    pub fn websocket_route<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        get(upgrade).with_state(self.clone())
    }
}

async fn upgrade(
    State(rt): State<Realtime>,
    headers: HandshakeHeaders,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query_token = query.as_ref().ok().and_then(|q| q.token.as_deref());
    let admission = match admit(&rt, headers, query_token, Transport::Websocket).await {
        Ok(admission) => admission,
        Err(refused) => return refused,
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return (
                rejection.status(),
                Json(json!({"error": "not_a_websocket_request", "reason": rejection.body_text()})),
            )
                .into_response();
        }
    };
    let config = rt.config();
    let sessions = rt.inner.sessions.clone();
    ws.read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| sessions.track_future(session::run(rt, socket, admission)))
}
