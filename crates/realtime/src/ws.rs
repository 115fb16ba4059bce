//! The WebSocket endpoint: authenticate before the upgrade, then hand the socket to
//! its session task. A rejected handshake gets 401 with a JSON reason and leaves
//! nothing registered.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use realtime_core::token::select_token;
use serde::Deserialize;
use serde_json::json;

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

/// The headers a handshake needs, alone: extracting the whole `HeaderMap` would
/// copy every header of every handshake.
pub(crate) struct HandshakeHeaders {
    authorization: Option<HeaderValue>,
    origin: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for HandshakeHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let get = |name| parts.headers.get(name).cloned();
        Ok(HandshakeHeaders {
            authorization: get(header::AUTHORIZATION),
            origin: get(header::ORIGIN),
            host: get(header::HOST),
        })
    }
}

async fn upgrade(
    State(rt): State<Realtime>,
    headers: HandshakeHeaders,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !rt.is_accepting() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "shutting_down", "reason": "server is shutting down"})),
        )
            .into_response();
    }
    let origin = header_text(&headers.origin);
    let host = header_text(&headers.host);
    if !rt.config().origin_policy.permits(origin, host) {
        rt.inner.metrics.rejected("forbidden_origin");
        tracing::debug!(
            origin = origin.unwrap_or(""),
            "handshake from a refused origin"
        );
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "forbidden_origin",
                "reason": "forbidden_origin",
                "message": "this origin may not open connections to this server"
            })),
        )
            .into_response();
    }
    let authorization = headers.authorization.as_ref().and_then(|v| v.to_str().ok());
    let query_token = query.as_ref().ok().and_then(|q| q.token.as_deref());
    let identity = match select_token(authorization, query_token).and_then(|token| rt.verify(token))
    {
        Ok(identity) => identity,
        Err(e) => {
            rt.inner.metrics.rejected(e.reason());
            tracing::debug!(reason = e.reason(), "handshake rejected");
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "unauthorized", "reason": e.reason(), "message": e.to_string()})),
            )
                .into_response();
        }
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
        .on_upgrade(move |socket| sessions.track_future(session::run(rt, socket, identity)))
}

/// A header as text; a value that is not visible ASCII becomes a NUL, which no
/// origin rule accepts.
fn header_text(value: &Option<HeaderValue>) -> Option<&str> {
    value.as_ref().map(|v| v.to_str().unwrap_or("\u{0}"))
}
