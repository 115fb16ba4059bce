//! The answers that refuse an SSE request for its topics, before any stream:
//! JSON bodies that name the topic (the handshake's own refusals are
//! `crate::handshake`'s).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use realtime_core::{ErrorCode, InvalidTopic};
use serde_json::json;

use super::query::MAX_TOPIC_PARAMS;
use crate::authorize::Refused;

/// 400 `invalid_topic`: a `topic` parameter that is not a topic name.
pub(crate) fn invalid_topic(topic: &str, e: &InvalidTopic) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_topic", "topic": topic, "message": e.to_string()})),
    )
        .into_response()
}

/// 403 `forbidden` (the policy's or the subscribe hook's refusal), or 503
/// `proxy_unavailable` (the hook could not decide).
pub(crate) fn topic_refused(topic: &str, refused: Refused) -> Response {
    let (status, error) = match refused.code {
        ErrorCode::ProxyUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "proxy_unavailable"),
        _ => (StatusCode::FORBIDDEN, "forbidden"),
    };
    (
        status,
        Json(json!({
            "error": error,
            "reason": refused.reason,
            "topic": topic,
            "message": refused.message,
        })),
    )
        .into_response()
}

/// The `realtime_handshakes_rejected_total` reason of a topic's refusal:
/// `forbidden_topic` (403) or `proxy_unavailable` (503), as [`topic_refused`]
/// answers it.
pub(crate) fn metric_reason(refused: &Refused) -> &'static str {
    match refused.code {
        ErrorCode::ProxyUnavailable => "proxy_unavailable",
        _ => "forbidden_topic",
    }
}

/// 400 `limit_exceeded`: more `topic` parameters than one request may carry.
pub(crate) fn too_many_topic_params() -> Response {
    limit_exceeded(format!(
        "a request may carry at most {MAX_TOPIC_PARAMS} topic parameters"
    ))
}

/// 400 `limit_exceeded`: more topics than a connection may subscribe to.
pub(crate) fn too_many_topics(max: usize) -> Response {
    limit_exceeded(format!(
        "a connection may subscribe to at most {max} topics"
    ))
}

fn limit_exceeded(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "limit_exceeded", "message": message})),
    )
        .into_response()
}
