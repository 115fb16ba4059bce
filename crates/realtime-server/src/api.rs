//! The HTTP API for backends: send along any route, inspect connections and topics,
//! change subscriptions, disconnect, read and reset topic history, read presence and
//! online status. Every call needs `Authorization: Bearer <api key>`;
//! every error is JSON `{"error": "<code>", "message": "..."}`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes_body::JsonBody;
use path::ApiPath;
use realtime::{
    ClusterError, ConnectionKey, Delivery, PageRequest, Realtime, Route, SendError, SubscribeError,
};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

mod history;
mod presence;

/// Largest accepted API request body.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct ApiState {
    rt: Realtime,
    api_key: Arc<str>,
}

/// The API routes, to be nested under `/api`, protected by `api_key`.
pub fn router(rt: Realtime, api_key: &str) -> Router {
    let state = ApiState {
        rt,
        api_key: Arc::from(api_key),
    };
    Router::new()
        .route("/broadcast", post(broadcast))
        .route("/users/{user_id}/messages", post(to_user))
        .route("/roles/{role}/messages", post(to_role))
        .route("/connections/{id}/messages", post(to_connection))
        .route("/topics/{topic}/messages", post(to_topic))
        .route(
            "/topics/{topic}/history",
            get(history::read).delete(history::reset),
        )
        .route("/topics/{topic}/presence", get(presence::members))
        .route("/topics/{topic}/presence/stats", get(presence::stats))
        .route("/users/{user_id}/presence", get(presence::user))
        .route("/presence/stats", get(presence::online))
        .route("/connections", get(list_connections))
        .route("/connections/{id}", get(get_connection).delete(disconnect))
        .route("/topics", get(list_topics))
        .route("/stats", get(stats))
        .route("/connections/{id}/subscriptions", post(subscribe))
        .route(
            "/connections/{id}/subscriptions/{topic}",
            delete(unsubscribe),
        )
        .route("/users/{user_id}/connections", delete(disconnect_user))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn require_api_key(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(key) if bool::from(key.as_bytes().ct_eq(state.api_key.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid API key")
            .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <api key>`",
        )
        .into_response(),
    }
}

/// The answer to a known path with a method it does not serve (`Allow` lists
/// the methods it does).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept this method",
    )
}

/// An API failure, rendered as a status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
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

    fn unknown_connection() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "connection_not_found",
            "no such connection",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
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

type ApiResult = Result<Json<serde_json::Value>, ApiError>;

/// `delivered` counts connections on this node; `relayed` says the message was
/// queued for the bus to the other nodes (their deliveries are asynchronous). On a
/// history topic the answer also carries the publication's `offset` and `epoch`.
fn delivered(d: Delivery) -> ApiResult {
    let mut answer = json!({"delivered": d.local, "relayed": d.relayed});
    if let Some(position) = d.position {
        answer["offset"] = json!(position.offset);
        answer["epoch"] = json!(position.epoch);
    }
    Ok(Json(answer))
}

/// Connection ids are UUIDs; anything else cannot name a connection.
fn connection_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::unknown_connection())
}

/// `?scope=local` (default: this node) or `?scope=cluster` (every node, from the
/// cluster directory). Cluster views are paged: `limit` entries at most (default
/// [`DEFAULT_PAGE`], at most [`MAX_PAGE`]) starting after `cursor`, the
/// `next_cursor` of the previous page.
#[derive(Debug, Default, Deserialize)]
struct ViewQuery {
    #[serde(default)]
    scope: Scope,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Entries in a page of a cluster view when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` a cluster view accepts, so one request's cost is bounded.
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Scope {
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

fn view(query: Result<Query<ViewQuery>, QueryRejection>) -> Result<View, ApiError> {
    let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let Query(q) = query.map_err(|_| {
        bad("`scope` must be `local` or `cluster`; `limit` a number; `cursor` a string")
    })?;
    match q.scope {
        Scope::Local if q.limit.is_some() || q.cursor.is_some() => {
            Err(bad("`limit` and `cursor` page the `scope=cluster` views"))
        }
        Scope::Local => Ok(View::Local),
        Scope::Cluster => match q.limit.unwrap_or(DEFAULT_PAGE) {
            limit @ 1..=MAX_PAGE => Ok(View::Cluster {
                limit,
                cursor: q.cursor,
            }),
            _ => Err(bad(&format!("`limit` must be between 1 and {MAX_PAGE}"))),
        },
    }
}

fn invalid_cursor() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "`cursor` must be a `next_cursor` from a previous page",
    )
}

/// A connections-view cursor on the wire: `{connection id}:{node label}`.
fn connection_cursor(key: &ConnectionKey) -> String {
    format!("{}:{}", key.1, key.0)
}

fn parse_connection_cursor(raw: &str) -> Result<ConnectionKey, ApiError> {
    let (id, node) = raw.split_once(':').ok_or_else(invalid_cursor)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid_cursor())?;
    Ok((node.to_owned(), id))
}

async fn broadcast(State(s): State<ApiState>, JsonBody(body): JsonBody) -> ApiResult {
    delivered(s.rt.send_json(Route::Broadcast, &body)?)
}

async fn to_user(
    State(s): State<ApiState>,
    ApiPath(user): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    delivered(s.rt.send_json(Route::User(user), &body)?)
}

async fn to_role(
    State(s): State<ApiState>,
    ApiPath(role): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    delivered(s.rt.send_json(Route::Role(role), &body)?)
}

/// Exact for any connection: the owning node answers whether it exists.
async fn to_connection(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let id = connection_id(&id)?;
    let reply = s.rt.send_json_confirmed(id, &body).await?;
    if !reply.found {
        return Err(ApiError::unknown_connection());
    }
    Ok(Json(
        json!({"delivered": usize::from(reply.changed), "relayed": !s.rt.is_local(&id)}),
    ))
}

async fn to_topic(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let topic = s.rt.parse_topic(&topic).map_err(SendError::from)?;
    // A history topic answers once the store has given the publication its
    // position, so the backend learns the offset it can later read from.
    if s.rt
        .config()
        .topic_policy
        .history_for(topic.as_str())
        .is_some()
    {
        return delivered(s.rt.publish_json_confirmed(&topic, &body).await?);
    }
    delivered(s.rt.send_json(Route::Topic(topic), &body)?)
}

async fn list_connections(
    State(s): State<ApiState>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> ApiResult {
    let View::Cluster { limit, cursor } = view(query)? else {
        let list = s.rt.connections();
        return Ok(Json(
            json!({"scope": "local", "count": list.len(), "connections": list}),
        ));
    };
    let after = cursor.as_deref().map(parse_connection_cursor).transpose()?;
    let page =
        s.rt.cluster_connections_page(PageRequest { limit, after })
            .await?;
    Ok(Json(json!({
        "scope": "cluster",
        "count": page.items.len(),
        "connections": page.items,
        "next_cursor": page.next.as_ref().map(connection_cursor),
    })))
}

async fn get_connection(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    let c =
        s.rt.connection(connection_id(&id)?)
            .ok_or_else(ApiError::unknown_connection)?;
    Ok(Json(json!(c)))
}

/// This node's counts: connections, topics, messages and deliveries since start.
async fn stats(State(s): State<ApiState>) -> ApiResult {
    Ok(Json(json!(s.rt.stats())))
}

async fn list_topics(
    State(s): State<ApiState>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> ApiResult {
    let View::Cluster { limit, cursor } = view(query)? else {
        let topics = s.rt.topics();
        return Ok(Json(
            json!({"scope": "local", "count": topics.len(), "topics": topics}),
        ));
    };
    // A topics-view cursor is the last topic of the previous page.
    let page =
        s.rt.cluster_topics_page(PageRequest {
            limit,
            after: cursor,
        })
        .await?;
    let topics: serde_json::Map<String, serde_json::Value> = page
        .items
        .into_iter()
        .map(|(topic, n)| (topic, json!(n)))
        .collect();
    Ok(Json(json!({
        "scope": "cluster",
        "count": topics.len(),
        "topics": topics,
        "next_cursor": page.next,
    })))
}

#[derive(Deserialize)]
struct SubscribeBody {
    topic: String,
}

async fn subscribe(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let id = connection_id(&id)?;
    let SubscribeBody { topic } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"topic\": \"...\"}}: {e}"),
        )
    })?;
    let added = s.rt.subscribe(id, &topic).await?;
    Ok(Json(
        json!({"topic": topic, "subscribed": true, "already_subscribed": !added}),
    ))
}

async fn unsubscribe(
    State(s): State<ApiState>,
    ApiPath((id, topic)): ApiPath<(String, String)>,
) -> ApiResult {
    let was = s.rt.unsubscribe(connection_id(&id)?, &topic).await?;
    Ok(Json(
        json!({"topic": topic, "unsubscribed": true, "was_subscribed": was}),
    ))
}

async fn disconnect(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    if !s.rt.disconnect(connection_id(&id)?).await? {
        return Err(ApiError::unknown_connection());
    }
    Ok(Json(json!({"disconnected": 1})))
}

async fn disconnect_user(State(s): State<ApiState>, ApiPath(user): ApiPath<String>) -> ApiResult {
    let d = s.rt.disconnect_user(&user)?;
    Ok(Json(json!({"disconnected": d.local, "relayed": d.relayed})))
}

mod bytes_body {
    //! The request body as raw bytes, with size-limit and read failures as JSON errors.
    use super::*;
    use axum::body::Bytes;

    pub struct JsonBody(pub Bytes);

    impl<S: Send + Sync> FromRequest<S> for JsonBody {
        type Rejection = ApiError;

        async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
            let too_large = || {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {MAX_BODY} bytes"),
                )
            };
            // Refused on its announced length, before reading any of it: the limit
            // alone would first wait for more than MAX_BODY bytes to arrive.
            let announced = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if announced.is_some_and(|n| n > MAX_BODY as u64) {
                return Err(too_large());
            }
            match Bytes::from_request(req, state).await {
                Ok(b) => Ok(JsonBody(b)),
                Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
                Err(r) => Err(ApiError::new(r.status(), "bad_request", r.body_text())),
            }
        }
    }
}

mod path {
    //! Path parameters, with a rejection (a segment that is not UTF-8 once
    //! percent-decoded, say) as a JSON error instead of axum's plain text.
    use super::*;
    use axum::extract::{FromRequestParts, Path};
    use axum::http::request::Parts;
    use serde::de::DeserializeOwned;

    pub struct ApiPath<T>(pub T);

    impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
            match Path::<T>::from_request_parts(parts, state).await {
                Ok(Path(value)) => Ok(ApiPath(value)),
                // A route declared without its parameters: our bug, not the caller's.
                Err(r) if r.status().is_server_error() => {
                    Err(ApiError::new(r.status(), "internal_error", r.body_text()))
                }
                Err(r) => Err(ApiError::new(r.status(), "invalid_path", r.body_text())),
            }
        }
    }
}
