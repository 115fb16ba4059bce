//! The HTTP API's topic history routes: read a page of a topic's history
//! (`GET /api/topics/{topic}/history`) and reset it (`DELETE`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use realtime::{HistoryError, HistoryQuery, HistoryQueryError, TopicHistory};
use realtime_core::history::MAX_HISTORY_LIMIT;
use realtime_core::{ErrorCode, Position};
use serde::Deserialize;
use serde_json::json;

use super::path::ApiPath;
use super::{ApiError, ApiResult, ApiState};

/// The query string, as text: each value is checked by [`history_query`] so a bad
/// one gets a message naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryParams {
    since_offset: Option<String>,
    epoch: Option<String>,
    limit: Option<String>,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn whole_number(name: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| bad_request(format!("`{name}` must be a whole number, not {raw:?}")))
}

/// `since_offset` and `epoch` name a position together; `limit` is capped at
/// [`MAX_HISTORY_LIMIT`], not refused above it.
fn history_query(
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<HistoryQuery, ApiError> {
    let Query(params) = query.map_err(|_| {
        bad_request(
            "the history query takes `since_offset` with `epoch`, and `limit`, each at most once",
        )
    })?;
    let since = match (params.since_offset, params.epoch) {
        (None, None) => None,
        (Some(offset), Some(epoch)) => {
            if epoch.is_empty() {
                return Err(bad_request("`epoch` is empty"));
            }
            Some(Position {
                offset: whole_number("since_offset", &offset)?,
                epoch,
            })
        }
        _ => {
            return Err(bad_request(
                "`since_offset` and `epoch` name a position together: give both or neither",
            ));
        }
    };
    let limit = params
        .limit
        .map(|raw| whole_number("limit", &raw))
        .transpose()?
        .map(|n| n.min(MAX_HISTORY_LIMIT as u64));
    Ok(HistoryQuery { since, limit })
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::HistoryUnavailable.as_str(),
            e.to_string(),
        )
    }
}

impl From<HistoryQueryError> for ApiError {
    fn from(e: HistoryQueryError) -> Self {
        match e {
            HistoryQueryError::InvalidTopic(t) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_topic",
                format!("invalid topic: {t}"),
            ),
            HistoryQueryError::NoHistory(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NoHistory.as_str(),
                e.to_string(),
            ),
            HistoryQueryError::Store(store) => store.into(),
        }
    }
}

/// `{"topic","publications":[...],"offset","epoch"}`, plus `"recovered"` when the
/// request gave a position.
pub(super) async fn read(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<TopicHistory>, ApiError> {
    let query = history_query(query)?;
    Ok(Json(s.rt.history(&topic, query).await?))
}

/// Drops the topic's publications and starts a new epoch at offset 0.
pub(super) async fn reset(State(s): State<ApiState>, ApiPath(topic): ApiPath<String>) -> ApiResult {
    let position = s.rt.reset_history(&topic).await?;
    Ok(Json(
        json!({"topic": topic, "offset": position.offset, "epoch": position.epoch}),
    ))
}
