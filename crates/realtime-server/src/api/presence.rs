//! The HTTP API's presence routes: a topic's members (paged) and counts, one
//! user's online status, and the cluster's online counts. Answers built from this
//! node alone, while the store is unreachable, are 200 with `"degraded": true`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use realtime::{
    OnlineStats, PresenceQuery, PresenceQueryError, PresenceStats, TopicPresence, UserPresence,
};
use realtime_core::ErrorCode;
use serde::Deserialize;

use super::path::ApiPath;
use super::{ApiError, ApiState};

/// The query string, as text: `limit` is checked here so a bad one gets a
/// message naming it; `cursor` is the engine's to judge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PresenceParams {
    limit: Option<String>,
    cursor: Option<String>,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn presence_query(
    query: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<PresenceQuery, ApiError> {
    let Query(params) = query.map_err(|_| {
        bad_request("the presence query takes `limit` and `cursor`, each at most once")
    })?;
    let limit = params
        .limit
        .map(|raw| {
            raw.parse::<u64>()
                .map_err(|_| bad_request(format!("`limit` must be a whole number, not {raw:?}")))
        })
        .transpose()?;
    Ok(PresenceQuery {
        limit,
        cursor: params.cursor,
    })
}

impl From<PresenceQueryError> for ApiError {
    fn from(e: PresenceQueryError) -> Self {
        match e {
            PresenceQueryError::InvalidTopic(t) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_topic",
                format!("invalid topic: {t}"),
            ),
            PresenceQueryError::NoPresence => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NoPresence.as_str(),
                e.to_string(),
            ),
            PresenceQueryError::BadLimit | PresenceQueryError::BadCursor => {
                bad_request(e.to_string())
            }
        }
    }
}

/// `{"topic","users":[{"user_id","connections":[...]}],"cursor"?,"degraded"?}`.
pub(super) async fn members(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    query: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<Json<TopicPresence>, ApiError> {
    let query = presence_query(query)?;
    Ok(Json(s.rt.presence(&topic, query).await?))
}

/// `{"topic","connections","users","degraded"?}`.
pub(super) async fn stats(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<PresenceStats>, ApiError> {
    Ok(Json(s.rt.presence_stats(&topic).await?))
}

/// `{"user_id","online","connections","last_seen","degraded"?}`.
pub(super) async fn user(
    State(s): State<ApiState>,
    ApiPath(user_id): ApiPath<String>,
) -> Json<UserPresence> {
    Json(s.rt.user_presence(&user_id).await)
}

/// `{"users","connections","degraded"?}`.
pub(super) async fn online(State(s): State<ApiState>) -> Json<OnlineStats> {
    Json(s.rt.online_stats().await)
}
