//! The HTTP API for backends: send along any route, inspect connections and topics,
//! change subscriptions, disconnect, read and reset topic history, read presence and
//! online status. Every call needs `Authorization: Bearer <api key>`;
//! every error is JSON `{"error": "<code>", "message": "..."}`. Each route is
//! declared once, by its handler's `#[utoipa::path]`: the router is built from
//! the documented handlers, so the OpenAPI document lists exactly what is served.
use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes_body::JsonBody;
use path::ApiPath;
use realtime::{Delivery, Realtime, Route, SendError, Stats};
use realtime_core::Topic;
use realtime_core::message_schema::{RouteMessage, TopicMessage};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub use error::ApiError;
use error::answers;

mod error;
mod history;
mod presence;
mod views;

pub use views::{DEFAULT_PAGE, MAX_PAGE};

/// Largest accepted API request body.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct ApiState {
    rt: Realtime,
    api_key: Arc<str>,
}

/// The API routes, to be nested under `/api`, protected by `api_key`, with the
/// OpenAPI description of each (paths relative to `/api`).
pub fn router(rt: Realtime, api_key: &str) -> OpenApiRouter {
    let state = ApiState {
        rt,
        api_key: Arc::from(api_key),
    };
    let (router, openapi): (Router<ApiState>, OpenApi) = OpenApiRouter::default()
        .routes(routes!(broadcast))
        .routes(routes!(to_user))
        .routes(routes!(to_role))
        .routes(routes!(to_connection))
        .routes(routes!(to_topic))
        .routes(routes!(history::read, history::reset))
        .routes(routes!(presence::members))
        .routes(routes!(presence::stats))
        .routes(routes!(presence::user))
        .routes(routes!(presence::online))
        .routes(routes!(views::list_connections))
        .routes(routes!(get_connection, disconnect))
        .routes(routes!(views::list_topics))
        .routes(routes!(stats))
        .routes(routes!(subscribe))
        .routes(routes!(unsubscribe))
        .routes(routes!(disconnect_user))
        .split_for_parts();
    let router = router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let mut api = OpenApiRouter::from(router);
    *api.get_openapi_mut() = openapi;
    api
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

/// What a send did. `delivered` counts connections on this node; `relayed` says
/// the message was queued for the bus to the other nodes (their deliveries are
/// asynchronous). On a history topic the answer also carries the publication's
/// `offset` and `epoch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivered {
    /// Connections on this node the message was queued to (on the connection
    /// route: 1 or 0, exact wherever the connection is).
    delivered: usize,
    /// Whether the message was queued for the other nodes.
    relayed: bool,
    /// On a history topic: the publication's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    /// On a history topic: the epoch of `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn delivered(d: Delivery) -> ApiResult<Delivered> {
    let (offset, epoch) = d.position.map(|p| (p.offset, p.epoch)).unzip();
    Ok(Json(Delivered {
        delivered: d.local,
        relayed: d.relayed,
        offset,
        epoch,
    }))
}

/// Connection ids are UUIDs; anything else cannot name a connection.
fn connection_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::unknown_connection())
}

/// Sends a message to every connection.
#[utoipa::path(post, path = "/broadcast", tag = "send",
    request_body = RouteMessage,
    responses(
        (status = 200, description = "Sent.", body = Delivered),
        (status = 400, description = answers::MESSAGE, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 413, description = answers::TOO_LARGE, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
    ))]
async fn broadcast(State(s): State<ApiState>, JsonBody(body): JsonBody) -> ApiResult<Delivered> {
    delivered(s.rt.send_json(Route::Broadcast, &body)?)
}

/// Sends a message to every connection of a user.
#[utoipa::path(post, path = "/users/{user_id}/messages", tag = "send",
    params(("user_id" = String, Path, min_length = 1, description = "The user id (the token's `sub`).")),
    request_body = RouteMessage,
    responses(
        (status = 200, description = "Sent.", body = Delivered),
        (status = 400, description = answers::MESSAGE, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 413, description = answers::TOO_LARGE, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
    ))]
async fn to_user(
    State(s): State<ApiState>,
    ApiPath(user): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Delivered> {
    delivered(s.rt.send_json(Route::User(user), &body)?)
}

/// Sends a message to every connection holding a role.
#[utoipa::path(post, path = "/roles/{role}/messages", tag = "send",
    params(("role" = String, Path, min_length = 1, description = "A role (from the token's `roles`).")),
    request_body = RouteMessage,
    responses(
        (status = 200, description = "Sent.", body = Delivered),
        (status = 400, description = answers::MESSAGE, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 413, description = answers::TOO_LARGE, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
    ))]
async fn to_role(
    State(s): State<ApiState>,
    ApiPath(role): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Delivered> {
    delivered(s.rt.send_json(Route::Role(role), &body)?)
}

/// Sends a message to one connection, wherever it is. Exact for any connection:
/// the owning node answers whether it exists.
#[utoipa::path(post, path = "/connections/{id}/messages", tag = "send",
    params(("id" = Uuid, Path, description = "The connection id (from its welcome).")),
    request_body = RouteMessage,
    responses(
        (status = 200, description = "Sent.", body = Delivered),
        (status = 400, description = answers::MESSAGE, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::CONNECTION, body = ApiError),
        (status = 413, description = answers::TOO_LARGE, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
        (status = 504, description = answers::NODE_TIMEOUT, body = ApiError),
    ))]
async fn to_connection(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Delivered> {
    let id = connection_id(&id)?;
    let reply = s.rt.send_json_confirmed(id, &body).await?;
    if !reply.found {
        return Err(ApiError::unknown_connection());
    }
    Ok(Json(Delivered {
        delivered: usize::from(reply.changed),
        relayed: !s.rt.is_local(&id),
        offset: None,
        epoch: None,
    }))
}

/// Publishes a message to a topic's subscribers. On a history topic the answer
/// comes once the store has given the publication its position.
#[utoipa::path(post, path = "/topics/{topic}/messages", tag = "send",
    params(("topic" = Topic, Path)),
    request_body = TopicMessage,
    responses(
        (status = 200, description = "Published.", body = Delivered),
        (status = 400, description = answers::TOPIC_MESSAGE, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 413, description = answers::TOO_LARGE, body = ApiError),
        (status = 503, description = answers::HISTORY_BUS, body = ApiError),
    ))]
async fn to_topic(
    State(s): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Delivered> {
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

/// One connection on this node.
#[utoipa::path(get, path = "/connections/{id}", tag = "connections",
    params(("id" = Uuid, Path, description = "The connection id.")),
    responses(
        (status = 200, description = "The connection.", body = realtime::ConnectionSummary),
        (status = 400, description = answers::PATH, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::CONNECTION, body = ApiError),
    ))]
async fn get_connection(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<realtime::ConnectionSummary> {
    let c =
        s.rt.connection(connection_id(&id)?)
            .ok_or_else(ApiError::unknown_connection)?;
    Ok(Json(c))
}

/// This node's counts: connections, topics, messages and deliveries since start.
#[utoipa::path(get, path = "/stats", tag = "connections",
    responses(
        (status = 200, description = "This node's counts; `messages` (sends) and `deliveries` \
            (frames queued) count since start, so two reads give rates.", body = Stats),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
    ))]
async fn stats(State(s): State<ApiState>) -> Json<Stats> {
    Json(s.rt.stats())
}

/// The body of `POST /api/connections/{id}/subscriptions`.
#[derive(Deserialize, ToSchema)]
struct SubscribeBody {
    #[schema(value_type = Topic)]
    topic: String,
}

/// The answer to a server-side subscribe.
#[derive(Serialize, ToSchema)]
struct Subscribed {
    topic: String,
    /// Always `true`.
    subscribed: bool,
    /// The connection was already subscribed to the topic.
    already_subscribed: bool,
}

/// Subscribes a connection to a topic, wherever the connection is (no policy
/// check: backends are trusted).
#[utoipa::path(post, path = "/connections/{id}/subscriptions", tag = "connections",
    params(("id" = Uuid, Path, description = "The connection id.")),
    request_body = SubscribeBody,
    responses(
        (status = 200, description = "Subscribed.", body = Subscribed),
        (status = 400, description = answers::SUBSCRIBE, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::CONNECTION, body = ApiError),
        (status = 413, description = answers::TOO_LARGE, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
        (status = 504, description = answers::NODE_TIMEOUT, body = ApiError),
    ))]
async fn subscribe(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Subscribed> {
    let id = connection_id(&id)?;
    let SubscribeBody { topic } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"topic\": \"...\"}}: {e}"),
        )
    })?;
    let added = s.rt.subscribe(id, &topic).await?;
    Ok(Json(Subscribed {
        topic,
        subscribed: true,
        already_subscribed: !added,
    }))
}

/// The answer to a server-side unsubscribe.
#[derive(Serialize, ToSchema)]
struct Unsubscribed {
    topic: String,
    /// Always `true`.
    unsubscribed: bool,
    /// The connection was subscribed to the topic.
    was_subscribed: bool,
}

/// Unsubscribes a connection from a topic, wherever the connection is.
#[utoipa::path(delete, path = "/connections/{id}/subscriptions/{topic}", tag = "connections",
    params(
        ("id" = Uuid, Path, description = "The connection id."),
        ("topic" = Topic, Path),
    ),
    responses(
        (status = 200, description = "Unsubscribed.", body = Unsubscribed),
        (status = 400, description = answers::TOPIC, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::CONNECTION, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
        (status = 504, description = answers::NODE_TIMEOUT, body = ApiError),
    ))]
async fn unsubscribe(
    State(s): State<ApiState>,
    ApiPath((id, topic)): ApiPath<(String, String)>,
) -> ApiResult<Unsubscribed> {
    let was = s.rt.unsubscribe(connection_id(&id)?, &topic).await?;
    Ok(Json(Unsubscribed {
        topic,
        unsubscribed: true,
        was_subscribed: was,
    }))
}

/// The answer to a disconnect of one connection.
#[derive(Serialize, ToSchema)]
struct Disconnected {
    /// Always 1.
    disconnected: usize,
}

/// Closes a connection with 3503 (do not reconnect), wherever it is.
#[utoipa::path(delete, path = "/connections/{id}", tag = "connections",
    params(("id" = Uuid, Path, description = "The connection id.")),
    responses(
        (status = 200, description = "Closed.", body = Disconnected),
        (status = 400, description = answers::PATH, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 404, description = answers::CONNECTION, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
        (status = 504, description = answers::NODE_TIMEOUT, body = ApiError),
    ))]
async fn disconnect(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Disconnected> {
    if !s.rt.disconnect(connection_id(&id)?).await? {
        return Err(ApiError::unknown_connection());
    }
    Ok(Json(Disconnected { disconnected: 1 }))
}

/// The answer to a disconnect of a user.
#[derive(Serialize, ToSchema)]
struct UserDisconnected {
    /// The user's connections closed on this node.
    disconnected: usize,
    /// Whether the disconnect was queued for the other nodes.
    relayed: bool,
}

/// Closes every connection of a user with 3503, on every node.
#[utoipa::path(delete, path = "/users/{user_id}/connections", tag = "connections",
    params(("user_id" = String, Path, min_length = 1, description = "The user id.")),
    responses(
        (status = 200, description = "Closed.", body = UserDisconnected),
        (status = 400, description = answers::PATH, body = ApiError),
        (status = 401, description = answers::UNAUTHORIZED, body = ApiError),
        (status = 503, description = answers::BUS, body = ApiError),
    ))]
async fn disconnect_user(
    State(s): State<ApiState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<UserDisconnected> {
    let d = s.rt.disconnect_user(&user)?;
    Ok(Json(UserDisconnected {
        disconnected: d.local,
        relayed: d.relayed,
    }))
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
