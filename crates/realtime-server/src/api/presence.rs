//! The HTTP API's presence routes: a topic's members (paged) and counts, one
//! user's online status, and the cluster's online counts. Answers built from this
//! node alone, while the store is unreachable, are 200 with `"degraded": true`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use realtime::presence::MAX_PRESENCE_LIMIT;
use realtime::{
    OnlineStats, PRESENCE_CURSOR_PATTERN, PresenceQuery, PresenceQueryError, PresenceStats,
    TopicPresence, UserPresence,
};
use realtime_core::{ErrorCode, Topic};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::error::answers;
use super::path::ApiPath;
use super::{ApiError, ApiState};

/// The query string, as text: `limit` is checked here so a bad one gets a
/// message naming it; `cursor` is the engine's to judge.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PresenceParams {
    /// Most connections in the page (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `cursor` of the previous page.
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// A presence cursor, as the engine reads it.
fn cursor_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(PRESENCE_CURSOR_PATTERN))
}

const _: () = assert!(MAX_PRESENCE_LIMIT == 1000, "the `limit` schema says 1000");

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

/// One page of a presence topic's members across the cluster, grouped by user
/// (`cursor` only when there is a next page).
#[utoipa::path(get, path = "/topics/{topic}/presence", tag = "presence",
    params(("topic" = Topic, Path), PresenceParams),
    responses(
        (status = 200, description = "The page; `degraded: true` when only this node's \
            members could be read.", body = TopicPresence),
        (status = 400, description = answers::PRESENCE_QUERY, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::NO_PRESENCE, body = ApiError),
    ))]
pub(super) async fn members(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    query: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<Json<TopicPresence>, ApiError> {
    let query = presence_query(query)?;
    Ok(Json(s.rt.presence(&topic, query).await?))
}

/// How many connections and users a presence topic has, across the cluster.
#[utoipa::path(get, path = "/topics/{topic}/presence/stats", tag = "presence",
    params(("topic" = Topic, Path)),
    responses(
        (status = 200, description = "The counts.", body = PresenceStats),
        (status = 400, description = answers::TOPIC, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::NO_PRESENCE, body = ApiError),
    ))]
pub(super) async fn stats(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<PresenceStats>, ApiError> {
    Ok(Json(s.rt.presence_stats(&topic).await?))
}

/// One user's online status across the cluster.
#[utoipa::path(get, path = "/users/{user_id}/presence", tag = "presence",
    params(("user_id" = String, Path, min_length = 1, description = "The user id.")),
    responses(
        (status = 200, description = "The status.", body = UserPresence),
        (status = 400, description = answers::PATH, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
    ))]
pub(super) async fn user(
    State(s): State<ApiState>,
    ApiPath(user_id): ApiPath<String>,
) -> Json<UserPresence> {
    Json(s.rt.user_presence(&user_id).await)
}

/// Online users and their connections across the cluster.
#[utoipa::path(get, path = "/presence/stats", tag = "presence",
    responses(
        (status = 200, description = "The counts.", body = OnlineStats),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
    ))]
pub(super) async fn online(State(s): State<ApiState>) -> Json<OnlineStats> {
    Json(s.rt.online_stats().await)
}
