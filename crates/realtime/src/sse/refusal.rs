//! The answers that refuse an SSE request for its topics, before any stream:
//! JSON bodies that name the topic, each counted in
//! `realtime_handshakes_rejected_total` (the handshake's own refusals are
//! `crate::handshake`'s).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use realtime_core::{ErrorCode, InvalidTopic};
use serde_json::json;

use super::query::MAX_TOPIC_PARAMS;
use crate::authorize::Refused;
use crate::metrics::Metrics;

/// 400 `invalid_topic`: a `topic` parameter that is not a topic name.
pub(crate) fn invalid_topic(metrics: &Metrics, topic: &str, e: &InvalidTopic) -> Response {
    metrics.rejected("invalid_topic");
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_topic", "topic": topic, "message": e.to_string()})),
    )
        .into_response()
}

/// 403 `forbidden` (the policy's or the subscribe hook's refusal, counted as
/// `forbidden_topic`), or 503 `proxy_unavailable` (the hook could not decide).
pub(crate) fn topic_refused(metrics: &Metrics, topic: &str, refused: Refused) -> Response {
    let (status, error, counted) = match refused.code {
        ErrorCode::ProxyUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy_unavailable",
            "proxy_unavailable",
        ),
        _ => (StatusCode::FORBIDDEN, "forbidden", "forbidden_topic"),
    };
    metrics.rejected(counted);
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

/// 400 `limit_exceeded`: more `topic` parameters than one request may carry.
pub(crate) fn too_many_topic_params(metrics: &Metrics) -> Response {
    limit_exceeded(
        metrics,
        format!("a request may carry at most {MAX_TOPIC_PARAMS} topic parameters"),
    )
}

/// 400 `limit_exceeded`: more topics than a connection may subscribe to.
pub(crate) fn too_many_topics(metrics: &Metrics, max: usize) -> Response {
    limit_exceeded(
        metrics,
        format!("a connection may subscribe to at most {max} topics"),
    )
}

fn limit_exceeded(metrics: &Metrics, message: String) -> Response {
    metrics.rejected("limit_exceeded");
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "limit_exceeded", "message": message})),
    )
        .into_response()
}
