//! Cross-origin reads of `/sse`: which origin an answer names in
//! `Access-Control-Allow-Origin`, and the `OPTIONS` preflight a page's `fetch`
//! sends before a request with an `Authorization` header. The Origin rules are
//! the WebSocket's (`RealtimeConfig::origin_policy`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::handshake::{HandshakeHeaders, header_text, refusal};
use crate::service::Realtime;

/// The methods a page may use on `/sse`.
const METHODS: &str = "GET, HEAD";
/// The request headers a page may send: the token, the resume position a
/// fetch-based reader sets itself, and the cache directive some readers add.
const REQUEST_HEADERS: &str = "authorization, last-event-id, cache-control";
/// How long a browser may keep a preflight's answer, seconds.
const MAX_AGE: &str = "600";

/// Which origin an answer lets read it.
pub(super) enum Cors {
    /// Any page, without credentials.
    Any,
    /// This page's origin, with credentials.
    Origin(HeaderValue),
}

impl Cors {
    /// What an answer to this request says in `Access-Control-Allow-Origin`:
    /// nothing without an `Origin` or for one the Origin rules refuse.
    pub(super) fn of(rt: &Realtime, headers: &HandshakeHeaders) -> Option<Cors> {
        let origin = headers.origin.clone()?;
        let policy = &rt.config().origin_policy;
        if !policy.permits(header_text(&headers.origin), header_text(&headers.host)) {
            return None;
        }
        Some(if policy.allows_any() {
            Cors::Any
        } else {
            Cors::Origin(origin)
        })
    }

    /// Names the origin (and credentials, and `Vary`) in `headers`.
    pub(super) fn apply(self, headers: &mut HeaderMap) {
        match self {
            Cors::Any => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            Cors::Origin(origin) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
    }
}

/// Serves `OPTIONS /sse`. A preflight from an allowed origin gets 204 with the
/// methods and headers a page may use; one from a refused origin gets the
/// handshake's 403 `forbidden_origin` JSON (and no CORS header, so the page's
/// request fails). Without an `Origin` it is no preflight: 204 with `Allow`.
pub(super) async fn preflight(State(rt): State<Realtime>, headers: HandshakeHeaders) -> Response {
    let allow = (
        StatusCode::NO_CONTENT,
        [(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        )],
    );
    if headers.origin.is_none() {
        return allow.into_response();
    }
    let Some(cors) = Cors::of(&rt, &headers) else {
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "forbidden_origin",
            "this origin may not open connections to this server",
        );
    };
    let mut response = allow.into_response();
    let h = response.headers_mut();
    cors.apply(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(REQUEST_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    response
}
