//! The pages the server serves itself: the JavaScript client at
//! `/client/realtime-client.js`, the admin page at `/admin` (its data come from the
//! HTTP API with the key the visitor enters), and in development mode the demo
//! page at `/` with `/dev/token`, which hands out tokens and the API key, to
//! requests whose `Host` is a loopback name or address only.
//! Every file is compiled into the binary; nothing is read from disk.

use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiError;
use crate::config::{Settings, TokenKey};
use crate::dev;

const CLIENT_JS: &str = include_str!("../../../clients/js/realtime-client.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const ADMIN_HTML: &str = include_str!("../assets/admin.html");
const ADMIN_JS: &str = include_str!("../assets/admin.js");
const DEMO_HTML: &str = include_str!("../assets/demo.html");
const DEMO_JS: &str = include_str!("../assets/demo.js");

/// Scripts and styles only from this server; connections only back to it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Longest lifetime of a development token.
const MAX_DEV_TTL: u64 = 24 * 3600;

/// The routes for the client, the admin page and (development mode) the demo.
pub fn router(settings: &Settings) -> Router {
    let router = Router::new()
        .route(
            "/client/realtime-client.js",
            get(|| file(CLIENT_JS, "text/javascript")),
        )
        .route("/assets/style.css", get(|| file(STYLE_CSS, "text/css")))
        .route("/admin", get(|| file(ADMIN_HTML, "text/html")))
        .route(
            "/assets/admin.js",
            get(|| file(ADMIN_JS, "text/javascript")),
        );
    let (true, TokenKey::Secret { current, .. }) = (settings.development, &settings.key) else {
        return router;
    };
    let dev = DevState {
        secret: current.clone(),
        api_key: settings.api_key.clone(),
    };
    let development = Router::new()
        .route("/", get(|| file(DEMO_HTML, "text/html")))
        .route("/assets/demo.js", get(|| file(DEMO_JS, "text/javascript")))
        .route("/dev/token", get(dev_token).with_state(dev))
        .layer(axum::middleware::from_fn(loopback_only));
    router.merge(development)
}

/// Development pages answer only requests addressed to a loopback name or
/// address: a site that rebinds its own DNS name to 127.0.0.1 would otherwise
/// read `/dev/token`, with the API key, from a developer's browser.
async fn loopback_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(dev::is_loopback_host) {
        return next.run(request).await;
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_host",
        "development pages answer only requests to localhost or a loopback address",
    )
    .into_response()
}

async fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let value = format!("{content_type}; charset=utf-8");
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Clone)]
struct DevState {
    secret: String,
    api_key: String,
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    user: Option<String>,
    /// Comma-separated.
    roles: Option<String>,
    /// Seconds.
    ttl: Option<u64>,
}

/// Development mode only: a token for `user` (default `demo-user`) with `roles`,
/// valid `ttl` seconds (default an hour, at most a day), and the API key, so the
/// demo page can connect and send through the HTTP API by itself.
async fn dev_token(
    State(dev): State<DevState>,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let Query(q) = query.map_err(|_| bad("query: user, roles (comma-separated), ttl (seconds)"))?;
    let user = q.user.unwrap_or_else(|| "demo-user".into());
    if user.is_empty() || user.len() > 128 {
        return Err(bad("`user` must be 1 to 128 bytes"));
    }
    let roles: Vec<&str> = q
        .roles
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let ttl = q.ttl.unwrap_or(3600).clamp(1, MAX_DEV_TTL);
    let token = dev::mint_token(&dev.secret, &user, &roles, Duration::from_secs(ttl))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let expires_at = realtime::unix_seconds(std::time::SystemTime::now())
        .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    Ok(Json(json!({
        "token": token,
        "user_id": user,
        "roles": roles,
        "expires_at": expires_at,
        "api_key": dev.api_key,
    })))
}
