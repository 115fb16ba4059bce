//! The HTTP API for backends: send along any route, inspect connections and topics,
//! change subscriptions, disconnect. Every call needs `Authorization: Bearer <api key>`;
//! every error is JSON `{"error": "<code>", "message": "..."}`.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes_body::JsonBody;
use realtime::{Realtime, Route, SendError, SubscribeError};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

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
        .route("/connections", get(list_connections))
        .route("/connections/{id}", get(get_connection).delete(disconnect))
        .route("/topics", get(list_topics))
        .route("/connections/{id}/subscriptions", post(subscribe))
        .route(
            "/connections/{id}/subscriptions/{topic}",
            delete(unsubscribe),
        )
        .route("/users/{user_id}/connections", delete(disconnect_user))
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

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        let code = match &e {
            SendError::InvalidMessage(m) => m.code(),
            SendError::InvalidTopic(_) => "invalid_topic",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::InvalidTopic(t) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", t.to_string())
            }
            SubscribeError::UnknownConnection => ApiError::unknown_connection(),
        }
    }
}

type ApiResult = Result<Json<serde_json::Value>, ApiError>;

fn delivered(n: usize) -> ApiResult {
    Ok(Json(json!({"delivered": n})))
}

/// Connection ids are UUIDs; anything else cannot name a connection.
fn connection_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::unknown_connection())
}

async fn broadcast(State(s): State<ApiState>, JsonBody(body): JsonBody) -> ApiResult {
    delivered(s.rt.send_json(Route::Broadcast, &body)?)
}

async fn to_user(
    State(s): State<ApiState>,
    Path(user): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    delivered(s.rt.send_json(Route::User(user), &body)?)
}

async fn to_role(
    State(s): State<ApiState>,
    Path(role): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    delivered(s.rt.send_json(Route::Role(role), &body)?)
}

async fn to_connection(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let id = connection_id(&id)?;
    let n = s.rt.send_json(Route::Connection(id), &body)?;
    if n == 0 && s.rt.connection(id).is_none() {
        return Err(ApiError::unknown_connection());
    }
    delivered(n)
}

async fn to_topic(
    State(s): State<ApiState>,
    Path(topic): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let topic = s.rt.parse_topic(&topic).map_err(SendError::from)?;
    delivered(s.rt.send_json(Route::Topic(topic), &body)?)
}

async fn list_connections(State(s): State<ApiState>) -> ApiResult {
    let list = s.rt.connections();
    Ok(Json(json!({"count": list.len(), "connections": list})))
}

async fn get_connection(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let c =
        s.rt.connection(connection_id(&id)?)
            .ok_or_else(ApiError::unknown_connection)?;
    Ok(Json(json!(c)))
}

async fn list_topics(State(s): State<ApiState>) -> ApiResult {
    let topics = s.rt.topics();
    Ok(Json(json!({"count": topics.len(), "topics": topics})))
}

#[derive(Deserialize)]
struct SubscribeBody {
    topic: String,
}

async fn subscribe(
    State(s): State<ApiState>,
    Path(id): Path<String>,
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
    let added = s.rt.subscribe(id, &topic)?;
    Ok(Json(
        json!({"topic": topic, "subscribed": true, "already_subscribed": !added}),
    ))
}

async fn unsubscribe(
    State(s): State<ApiState>,
    Path((id, topic)): Path<(String, String)>,
) -> ApiResult {
    let was = s.rt.unsubscribe(connection_id(&id)?, &topic)?;
    Ok(Json(
        json!({"topic": topic, "unsubscribed": true, "was_subscribed": was}),
    ))
}

async fn disconnect(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    if !s.rt.disconnect(connection_id(&id)?) {
        return Err(ApiError::unknown_connection());
    }
    Ok(Json(json!({"disconnected": 1})))
}

async fn disconnect_user(State(s): State<ApiState>, Path(user): Path<String>) -> ApiResult {
    Ok(Json(json!({"disconnected": s.rt.disconnect_user(&user)})))
}

mod bytes_body {
    //! The request body as raw bytes, with size-limit and read failures as JSON errors.
    use super::*;
    use axum::body::Bytes;

    pub struct JsonBody(pub Bytes);

    impl<S: Send + Sync> FromRequest<S> for JsonBody {
        type Rejection = ApiError;

        async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
            match Bytes::from_request(req, state).await {
                Ok(b) => Ok(JsonBody(b)),
                Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {MAX_BODY} bytes"),
                )),
                Err(r) => Err(ApiError::new(r.status(), "bad_request", r.body_text())),
            }
        }
    }
}
