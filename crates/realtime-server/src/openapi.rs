//! The OpenAPI document of the HTTP API: its frame (title and version from Cargo,
//! the API-key security scheme, what every request can meet before routing),
//! the per-deployment limits it states, and the route serving it at
//! `/api/openapi.json`. The operations come from the handlers' `#[utoipa::path]`.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, SecurityRequirement,
};

use crate::api::ApiError;

/// The name of the API-key security scheme.
pub const API_KEY_SCHEME: &str = "api_key";

const DESCRIPTION: &str = "The HTTP API of a Boundary Realtime server, for backends: send \
messages along any route, inspect connections and topics, change subscriptions, disconnect, \
read and reset topic history, read presence. Every `/api` operation needs \
`Authorization: Bearer <api key>`; this document, `/health` and `/metrics` do not. \
Errors are JSON `{\"error\": \"<code>\", \"message\": \"...\"}`.\n\n\
Before any route, every request can also be answered `503 too_many_connections` (the \
server is at `max_connections`), `400 bad_request`, `414 uri_too_long` or \
`431 headers_too_large` (a request head that cannot be parsed), with the same error body. \
The WebSocket (`/ws`) and Server-Sent Events (`/sse`) endpoints are described in \
docs/PROTOCOL.md.";

/// The document's frame, before the operations are added.
pub fn base() -> OpenApi {
    let info = InfoBuilder::new()
        .title(env!("CARGO_PKG_NAME"))
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .build();
    let api_key = SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The server's API key (`api_key`)."))
            .build(),
    );
    OpenApiBuilder::new()
        .info(info)
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(API_KEY_SCHEME, api_key)
                .build(),
        ))
        .security(Some([SecurityRequirement::new(
            API_KEY_SCHEME,
            Vec::<String>::new(),
        )]))
        .build()
}

/// States this server's own limits where the schemas have the defaults: the
/// longest topic name it accepts.
pub fn with_limits(mut document: OpenApi, max_topic_length: usize) -> OpenApi {
    let topic = document
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("Topic"));
    if let Some(RefOr::T(Schema::Object(topic))) = topic {
        topic.max_length = Some(max_topic_length);
    }
    document
}

/// The document as served, written once the router is built.
pub type Document = Arc<OnceLock<String>>;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    security(()),
    responses(
        (status = 200, description = "This OpenAPI document.", body = Object,
            content_type = "application/json"),
        (status = 500, description = "`internal_error`: the document is not built yet.",
            body = ApiError),
    ))]
pub async fn document(State(document): State<Document>) -> Response {
    match document.get() {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the OpenAPI document is not built yet",
        )
        .into_response(),
    }
}
