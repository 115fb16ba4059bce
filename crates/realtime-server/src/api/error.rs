//! The HTTP API's error answer: a status with the JSON body
//! `{"error": "<code>", "message": "..."}` (the `ApiError` schema of the OpenAPI
//! document), the engine's errors mapped to it, and the descriptions of each
//! status the operations document.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use realtime::{ClusterError, SendError, SubscribeError};
use serde::Serialize;
use utoipa::ToSchema;

/// An API failure, rendered as a status and a JSON body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// A stable, machine-readable code (see each response's description).
    #[serde(rename = "error")]
    #[schema(value_type = String, example = "bad_request")]
    code: &'static str,
    /// What went wrong, for a human.
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn unknown_connection() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "connection_not_found",
            "no such connection",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Bus(b) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                b.to_string(),
            ),
            ClusterError::Timeout => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "node_timeout", e.to_string())
            }
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::InvalidMessage(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, m.code(), m.to_string())
            }
            SendError::InvalidTopic(t) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_topic",
                format!("invalid topic: {t}"),
            ),
            SendError::Cluster(c) => c.into(),
            SendError::History(h) => h.into(),
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::InvalidTopic(t) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", t.to_string())
            }
            SubscribeError::UnknownConnection => ApiError::unknown_connection(),
            SubscribeError::Cluster(c) => c.into(),
            SubscribeError::History(h) => h.into(),
        }
    }
}

/// The descriptions of the error answers in the OpenAPI document, one per cause,
/// naming the `error` codes each can carry; the codes are the ones built above
/// and in the extractors.
pub(super) mod answers {
    pub const UNAUTHORIZED: &str = "`unauthorized`: missing or wrong API key.";
    pub const MESSAGE: &str = "`invalid_json`: the body is not JSON; `invalid_message`: not an \
        object with a string `type`, or it carries a field the server sets; `invalid_path`: a \
        path segment that is not UTF-8 once percent-decoded; `bad_request`: the body could not \
        be read.";
    pub const TOPIC_MESSAGE: &str = "`invalid_topic`: the topic breaks the naming rules; \
        `invalid_json`, `invalid_message` (also: `offset` or `epoch` on a history topic), \
        `invalid_path`, `bad_request` as for the other sends.";
    pub const PATH: &str = "`invalid_path`: a path segment that is not UTF-8 once \
        percent-decoded.";
    pub const TOPIC: &str = "`invalid_topic`: the topic breaks the naming rules; \
        `invalid_path`: a path segment that is not UTF-8 once percent-decoded.";
    pub const SUBSCRIBE: &str = "`bad_request`: the body is not `{\"topic\": \"...\"}`; \
        `invalid_topic`: the topic breaks the naming rules; `invalid_path`.";
    pub const VIEW: &str = "`bad_request`: a bad `scope`, `limit` or `cursor`, `limit` or \
        `cursor` without `scope=cluster`, an unknown or repeated parameter.";
    pub const CONNECTION: &str = "`connection_not_found`: no such connection (or the id is not \
        a UUID).";
    pub const TOO_LARGE: &str = "`payload_too_large`: the body is over 1 MiB; refused on its \
        `Content-Length` before any of it is read.";
    pub const BUS: &str = "`bus_unavailable`: with the `redis` provider, Redis is unreachable \
        or the publisher backlog is full: nothing was sent, locally either; retry.";
    pub const HISTORY_BUS: &str = "`history_unavailable`: the history store cannot be reached; \
        `bus_unavailable`: Redis is unreachable. Nothing was published; retry.";
    pub const NODE_TIMEOUT: &str = "`node_timeout`: the node holding the connection did not \
        answer within 5 s.";
    pub const HISTORY_QUERY: &str = "`bad_request`: `since_offset` without `epoch` or the \
        reverse, an empty `epoch`, a value that is not a whole number, an unknown or repeated \
        parameter; `invalid_topic`; `invalid_path`.";
    pub const NO_HISTORY: &str = "`no_history`: the topic's namespace keeps no history.";
    pub const HISTORY: &str = "`history_unavailable`: the history store cannot be reached; \
        retry.";
    pub const PRESENCE_QUERY: &str = "`bad_request`: a `limit` outside 1-1000 or not a \
        number, a malformed `cursor`, an unknown or repeated parameter; `invalid_topic`; \
        `invalid_path`.";
    pub const NO_PRESENCE: &str = "`no_presence`: the topic's namespace keeps no presence.";
    pub const CLUSTER_VIEW: &str = "`bus_unavailable`: the cluster directory cannot be read.";
}
