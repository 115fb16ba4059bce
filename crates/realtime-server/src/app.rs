//! Assembles the server: engine, WebSocket route, HTTP API, health and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use realtime::{JwtVerifier, KeyError, Realtime};
use serde_json::json;

use crate::api;
use crate::config::{Settings, TokenKey};

/// The engine and the router serving it.
pub struct App {
    pub realtime: Realtime,
    pub router: Router,
}

/// The token key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read public key {path}: {source}")]
    ReadKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Builds the engine and every route from resolved settings.
pub fn build(settings: &Settings) -> Result<App, AppError> {
    let verifier = match &settings.key {
        TokenKey::Secret(secret) => JwtVerifier::hs256(secret.as_bytes(), settings.claims.clone())?,
        TokenKey::PublicKey(path) => {
            let pem = std::fs::read(path).map_err(|source| AppError::ReadKey {
                path: path.clone(),
                source,
            })?;
            JwtVerifier::from_public_pem(settings.algorithm, &pem, settings.claims.clone())?
        }
    };
    let realtime = Realtime::new(verifier, settings.engine.clone());
    let mut registry = Registry::default();
    realtime.register_metrics(&mut registry);
    let registry = Arc::new(registry);

    let router = Router::new()
        .route("/ws", realtime.websocket_route())
        .route("/health", get(health).with_state(realtime.clone()))
        .route("/metrics", get(metrics).with_state(registry))
        .nest("/api", api::router(realtime.clone(), &settings.api_key))
        .fallback(|| async {
            api::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        });
    Ok(App { realtime, router })
}

async fn health(State(rt): State<Realtime>) -> impl IntoResponse {
    let (status, label) = if rt.is_accepting() {
        (StatusCode::OK, "healthy")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    };
    (
        status,
        Json(
            json!({"status": label, "active_connections": rt.connection_count(), "service": "realtime"}),
        ),
    )
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
