//! The HTTP API's connection and topic views: this node's (`scope=local`, the
//! default) or one page of the cluster's (`scope=cluster` with `limit` and
//! `cursor`), with the query's schema written beside the code that checks it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use realtime::{ConnectionKey, ConnectionSummary, DirectoryEntry, PageRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::error::answers;
use super::{ApiError, ApiResult, ApiState};

/// Entries in a page of a cluster view when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` a cluster view accepts, so one request's cost is bounded.
pub const MAX_PAGE: usize = 1000;

/// `?scope=local` (default: this node) or `?scope=cluster` (every node, from the
/// cluster directory). Cluster views are paged: `limit` entries at most (default
/// [`DEFAULT_PAGE`], at most [`MAX_PAGE`]) starting after `cursor`, the
/// `next_cursor` of the previous page. Any other parameter is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ViewQuery {
    #[serde(default)]
    scope: Scope,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Scope {
    #[default]
    Local,
    Cluster,
}

/// What a view request asks for: this node, or one page of the cluster.
enum View {
    Local,
    Cluster {
        limit: usize,
        cursor: Option<String>,
    },
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn view(query: Result<Query<ViewQuery>, QueryRejection>) -> Result<View, ApiError> {
    let Query(q) = query.map_err(|_| {
        bad_request(
            "the view query takes `scope` (`local` or `cluster`), `limit` (a number) and \
             `cursor`, each at most once",
        )
    })?;
    match q.scope {
        Scope::Local if q.limit.is_some() || q.cursor.is_some() => Err(bad_request(
            "`limit` and `cursor` page the `scope=cluster` views",
        )),
        Scope::Local => Ok(View::Local),
        Scope::Cluster => match q.limit.unwrap_or(DEFAULT_PAGE) {
            limit @ 1..=MAX_PAGE => Ok(View::Cluster {
                limit,
                cursor: q.cursor,
            }),
            _ => Err(bad_request(&format!(
                "`limit` must be between 1 and {MAX_PAGE}"
            ))),
        },
    }
}

/// The schema of [`ViewQuery`] as [`view`] checks it: either this node (only
/// `scope=local`, or nothing), or a page of the cluster (`scope=cluster`, with
/// `limit` and `cursor`). `cursor` is the view's own.
fn view_query_schema(cursor: ObjectBuilder) -> RefOr<Schema> {
    let closed = || Some(AdditionalProperties::FreeForm(false));
    let local = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some("This node"))
        .property(
            "scope",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["local"])),
        )
        .additional_properties(closed());
    let cluster = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some("The cluster, one page"))
        .property(
            "scope",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["cluster"])),
        )
        .required("scope")
        .property(
            "limit",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_PAGE as u64))
                .default(Some(json!(DEFAULT_PAGE)))
                .description(Some("Most entries in the page.")),
        )
        .property(
            "cursor",
            cursor.description(Some("The `next_cursor` of the previous page.")),
        )
        .additional_properties(closed());
    OneOfBuilder::new().item(local).item(cluster).into()
}

/// The connections view's query.
pub(super) struct ConnectionsQuery;

impl PartialSchema for ConnectionsQuery {
    fn schema() -> RefOr<Schema> {
        view_query_schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(CONNECTION_CURSOR_PATTERN)),
        )
    }
}

impl ToSchema for ConnectionsQuery {}

/// The topics view's query.
pub(super) struct TopicsQuery;

impl PartialSchema for TopicsQuery {
    fn schema() -> RefOr<Schema> {
        view_query_schema(ObjectBuilder::new().schema_type(Type::String))
    }
}

impl ToSchema for TopicsQuery {}

fn invalid_cursor() -> ApiError {
    bad_request("`cursor` must be a `next_cursor` from a previous page")
}

/// A connections-view cursor on the wire: `{connection id}:{node label}`.
fn connection_cursor(key: &ConnectionKey) -> String {
    format!("{}:{}", key.1, key.0)
}

/// What [`parse_connection_cursor`] accepts: a hyphenated UUID, `:`, a node label.
const CONNECTION_CURSOR_PATTERN: &str =
    "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}:";

/// Only the hyphenated form the cursors are written in (36 characters), so the
/// accepted cursors are exactly [`CONNECTION_CURSOR_PATTERN`]'s.
fn parse_connection_cursor(raw: &str) -> Result<ConnectionKey, ApiError> {
    let (id, node) = raw.split_once(':').ok_or_else(invalid_cursor)?;
    if id.len() != 36 {
        return Err(invalid_cursor());
    }
    let id = Uuid::parse_str(id).map_err(|_| invalid_cursor())?;
    Ok((node.to_owned(), id))
}

/// The connections view: this node's, or one page of the cluster's.
#[derive(Serialize, ToSchema)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub(super) enum ConnectionsView {
    /// This node's connections.
    Local {
        count: usize,
        connections: Vec<ConnectionSummary>,
    },
    /// One page of every node's connections, ordered by node label, then id.
    Cluster {
        /// Entries in this page.
        count: usize,
        connections: Vec<DirectoryEntry>,
        /// Pass back as `cursor` for the next page; `null` on the last page.
        next_cursor: Option<String>,
    },
}

/// The connections on this node, or one page of every node's.
#[utoipa::path(get, path = "/connections", tag = "connections",
    params(("view" = inline(Option<ConnectionsQuery>), Query, style = Form, explode,
        description = "`scope=local` (default) or `scope=cluster` with `limit` and `cursor`.")),
    responses(
        (status = 200, description = "The view.", body = ConnectionsView),
        (status = 400, description = answers::VIEW, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 503, description = answers::CLUSTER_VIEW, body = ApiError),
    ))]
pub(super) async fn list_connections(
    State(s): State<ApiState>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> ApiResult<ConnectionsView> {
    let View::Cluster { limit, cursor } = view(query)? else {
        let connections = s.rt.connections();
        return Ok(Json(ConnectionsView::Local {
            count: connections.len(),
            connections,
        }));
    };
    let after = cursor.as_deref().map(parse_connection_cursor).transpose()?;
    let page =
        s.rt.cluster_connections_page(PageRequest { limit, after })
            .await?;
    Ok(Json(ConnectionsView::Cluster {
        count: page.items.len(),
        connections: page.items,
        next_cursor: page.next.as_ref().map(connection_cursor),
    }))
}

/// The topics view: subscriber counts by topic.
#[derive(Serialize, ToSchema)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub(super) enum TopicsView {
    /// This node's topics and their subscribers on this node.
    Local {
        count: usize,
        topics: BTreeMap<String, usize>,
    },
    /// One page of every node's topics, by name, each count summed over the nodes.
    Cluster {
        /// Entries in this page.
        count: usize,
        topics: BTreeMap<String, usize>,
        /// Pass back as `cursor` for the next page; `null` on the last page.
        next_cursor: Option<String>,
    },
}

/// The topics with subscribers on this node, or one page of every node's.
#[utoipa::path(get, path = "/topics", tag = "connections",
    params(("view" = inline(Option<TopicsQuery>), Query, style = Form, explode,
        description = "`scope=local` (default) or `scope=cluster` with `limit` and `cursor`.")),
    responses(
        (status = 200, description = "The view.", body = TopicsView),
        (status = 400, description = answers::VIEW, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 503, description = answers::CLUSTER_VIEW, body = ApiError),
    ))]
pub(super) async fn list_topics(
    State(s): State<ApiState>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> ApiResult<TopicsView> {
    let View::Cluster { limit, cursor } = view(query)? else {
        let topics = s.rt.topics();
        return Ok(Json(TopicsView::Local {
            count: topics.len(),
            topics,
        }));
    };
    // A topics-view cursor is the last topic of the previous page.
    let page =
        s.rt.cluster_topics_page(PageRequest {
            limit,
            after: cursor,
        })
        .await?;
    let topics: BTreeMap<String, usize> = page.items.into_iter().collect();
    Ok(Json(TopicsView::Cluster {
        count: topics.len(),
        topics,
        next_cursor: page.next,
    }))
}
