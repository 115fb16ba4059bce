//! Assembles the server: engine (with the backend proxy hooks), WebSocket and
//! SSE routes, HTTP API, health, metrics and the webhook sender.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use realtime::{BusStatus, JwtVerifier, KeyError, Realtime};
use serde_json::json;

use crate::api;
use crate::config::{Provider, Settings, TokenKey};
use crate::proxy::{self, ProxyMetrics};
use crate::slots::ConnectionSlots;
use crate::webhooks::{WebhookMetrics, WebhookSender};
use realtime_redis::{RedisCluster, RedisConfig};

/// The engine and the router serving it.
pub struct App {
    pub realtime: Realtime,
    pub router: Router,
    /// The Redis adapters, with the `redis` provider.
    pub redis: Option<RedisCluster>,
    /// The connection cap, counted in the metrics.
    pub slots: ConnectionSlots,
    /// Delivering presence events, with a `webhook_url`.
    pub webhooks: Option<WebhookSender>,
}

/// The token key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read key file {path}: {source}")]
    ReadKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Redis(#[from] realtime_redis::SetupError),
    #[error("cannot start the webhook sender: {0}")]
    Webhook(String),
    #[error("cannot set up the proxy hooks: {0}")]
    Proxy(String),
}

/// Builds the engine and every route from resolved settings, and starts the
/// webhook sender when one is configured (so it must run inside a runtime).
pub fn build(settings: &Settings) -> Result<App, AppError> {
    let rules = settings.claims.clone();
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| AppError::ReadKey {
            path: path.clone(),
            source,
        })
    };
    let verifier = match &settings.key {
        TokenKey::Secret { current, previous } => {
            let verifier = JwtVerifier::hs256(current.as_bytes(), rules)?;
            match previous {
                Some(previous) => verifier.with_previous_secret(previous.as_bytes())?,
                None => verifier,
            }
        }
        TokenKey::PublicKey(path) => {
            JwtVerifier::from_public_pem(settings.algorithm, &read(path)?, rules)?
        }
        TokenKey::Jwks(path) => JwtVerifier::from_jwks(settings.algorithm, &read(path)?, rules)?,
    };
    let mut registry = Registry::default();
    let mut engine = settings.engine.clone();
    if settings.proxy.any() {
        let metrics = ProxyMetrics::new();
        metrics.register(&mut registry);
        engine.hooks = proxy::hooks(&settings.proxy, engine.max_topic_length, metrics)
            .map_err(AppError::Proxy)?;
    }
    let (realtime, redis) = match &settings.provider {
        Provider::Memory => (Realtime::new(verifier, engine), None),
        Provider::Redis {
            url,
            prefix,
            heartbeat,
        } => {
            let mut config = RedisConfig::new(url.clone());
            config.prefix = prefix.clone();
            config.heartbeat = *heartbeat;
            let redis = RedisCluster::new(config)?;
            let cluster = redis.cluster_config(settings.node_id.clone());
            (Realtime::clustered(verifier, engine, cluster), Some(redis))
        }
    };
    realtime.register_metrics(&mut registry);
    let slots = ConnectionSlots::new(settings.http.max_connections);
    slots.register(&mut registry);
    let webhooks = start_webhooks(settings, &realtime, &mut registry)?;
    let registry = Arc::new(registry);

    let router = Router::new()
        .route("/ws", realtime.websocket_route())
        .route("/sse", realtime.sse_route())
        .route("/health", get(health).with_state(realtime.clone()))
        .route("/metrics", get(metrics).with_state(registry))
        .nest("/api", api::router(realtime.clone(), &settings.api_key))
        .merge(crate::pages::router(settings))
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(|| async {
            api::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        });
    let router = if crate::request_log::enabled() {
        router.layer(axum::middleware::from_fn(crate::request_log::log_requests))
    } else {
        router
    };
    Ok(App {
        realtime,
        router,
        redis,
        slots,
        webhooks,
    })
}

/// The sender draining the engine's event queue, with its metrics. The engine
/// has a queue exactly when `presence.events` is on, which the configuration
/// turns on with the webhook URL.
fn start_webhooks(
    settings: &Settings,
    realtime: &Realtime,
    registry: &mut Registry,
) -> Result<Option<WebhookSender>, AppError> {
    let Some(endpoint) = &settings.webhook.endpoint else {
        return Ok(None);
    };
    let Some(queue) = realtime.presence_events() else {
        return Err(AppError::Webhook(
            "the presence store keeps no event queue".into(),
        ));
    };
    let metrics = WebhookMetrics::new();
    metrics.register(registry, queue.clone());
    WebhookSender::start(queue, endpoint, &settings.webhook, metrics)
        .map(Some)
        .map_err(AppError::Webhook)
}

/// 200 `healthy` only while messages can flow and the cluster directory is
/// reachable; 503 `degraded` (with the reasons) while the bus or the directory is
/// down, 503 `shutting_down` during shutdown.
async fn health(State(rt): State<Realtime>) -> impl IntoResponse {
    let connections = rt.connection_count();
    let body = |status: &str| json!({"status": status, "active_connections": connections, "service": "realtime"});
    if !rt.is_accepting() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body("shutting_down")));
    }
    let reasons: Vec<String> = [rt.bus_status(), rt.directory_status()]
        .into_iter()
        .filter_map(|status| match status {
            BusStatus::Up => None,
            BusStatus::Down { reason } => Some(reason),
        })
        .collect();
    if reasons.is_empty() {
        return (StatusCode::OK, Json(body("healthy")));
    }
    let mut b = body("degraded");
    b["reason"] = json!(reasons.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, Json(b))
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
        Err(_) => api::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "cannot encode the metrics",
        )
        .into_response(),
    }
}
