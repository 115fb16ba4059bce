//! The HTTP API's topic history routes: read a page of a topic's history
//! (`GET /api/topics/{topic}/history`) and reset it (`DELETE`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use realtime::{HistoryError, HistoryQuery, HistoryQueryError, TopicHistory};
use realtime_core::history::MAX_HISTORY_LIMIT;
use realtime_core::{ErrorCode, Position, Topic};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::error::answers;
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

/// The schema of [`HistoryParams`] as [`history_query`] checks it: `since_offset`
/// and `epoch` together or neither, `limit` with either; nothing else.
impl PartialSchema for HistoryParams {
    fn schema() -> RefOr<Schema> {
        let whole = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(u64::MAX))
                .description(Some(description))
        };
        let limit = || {
            whole(
                "Most publications returned, at most 1000 (also the default; larger is \
                 taken as 1000); 0 answers only the position.",
            )
        };
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let from_oldest = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("From the oldest held"))
            .property("limit", limit())
            .additional_properties(closed());
        let since = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("After a position"))
            .property(
                "since_offset",
                whole("The publications after this offset (of `epoch`)."),
            )
            .required("since_offset")
            .property(
                "epoch",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .description(Some("The epoch of `since_offset`.")),
            )
            .required("epoch")
            .property("limit", limit())
            .additional_properties(closed());
        OneOfBuilder::new().item(from_oldest).item(since).into()
    }
}

impl ToSchema for HistoryParams {}

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

/// A page of a topic's history and its current position. Without a position the
/// page starts at the oldest publication held; with `since_offset` and `epoch`, it
/// holds the publications after it, and `recovered` says whether none is missing
/// between (false: the page starts at the oldest held instead).
#[utoipa::path(get, path = "/topics/{topic}/history", tag = "history",
    params(
        ("topic" = Topic, Path),
        ("query" = inline(Option<HistoryParams>), Query, style = Form, explode,
            description = "`since_offset` with `epoch`, and `limit`, each at most once."),
    ),
    responses(
        (status = 200, description = "The page.", body = TopicHistory),
        (status = 400, description = answers::HISTORY_QUERY, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::NO_HISTORY, body = ApiError),
        (status = 503, description = answers::HISTORY, body = ApiError),
    ))]
pub(super) async fn read(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<TopicHistory>, ApiError> {
    let query = history_query(query)?;
    Ok(Json(s.rt.history(&topic, query).await?))
}

/// A topic's position after a reset.
#[derive(Serialize, ToSchema)]
pub(super) struct HistoryReset {
    topic: String,
    /// Always 0: the next publication is offset 1.
    offset: u64,
    /// The new epoch.
    epoch: String,
}

/// Drops the topic's publications and starts a new epoch at offset 0.
#[utoipa::path(delete, path = "/topics/{topic}/history", tag = "history",
    params(("topic" = Topic, Path)),
    responses(
        (status = 200, description = "Reset.", body = HistoryReset),
        (status = 400, description = answers::TOPIC, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::NO_HISTORY, body = ApiError),
        (status = 503, description = answers::HISTORY, body = ApiError),
    ))]
pub(super) async fn reset(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
) -> ApiResult<HistoryReset> {
    let Position { offset, epoch } = s.rt.reset_history(&topic).await?;
    Ok(Json(HistoryReset {
        topic,
        offset,
        epoch,
    }))
}
