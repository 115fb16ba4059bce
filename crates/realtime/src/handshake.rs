//! What every transport's handshake does before a connection exists: refuse
//! while shutting down (503), check the Origin (403), verify the token (401) and
//! consult the connect hook when one is set. Each refusal is an HTTP status with
//! a JSON body `{"error", "reason", "message"}` and leaves nothing registered.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use realtime_core::token::select_token;
use realtime_core::{AuthError, Transport};
use serde_json::json;

use crate::hooks::{Admission, ConnectRequest};
use crate::service::Realtime;

/// The headers a handshake needs, alone: extracting the whole `HeaderMap` would
/// copy every header of every handshake. All of them are kept only when a
/// connect hook is set (it may forward cookies and allow-listed headers).
pub(crate) struct HandshakeHeaders {
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) origin: Option<HeaderValue>,
    pub(crate) host: Option<HeaderValue>,
    /// Every header, when the connect hook needs them.
    pub(crate) all: Option<HeaderMap>,
}

impl FromRequestParts<Realtime> for HandshakeHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, rt: &Realtime) -> Result<Self, Self::Rejection> {
        let get = |name| parts.headers.get(name).cloned();
        Ok(HandshakeHeaders {
            authorization: get(header::AUTHORIZATION),
            origin: get(header::ORIGIN),
            host: get(header::HOST),
            all: rt
                .config()
                .hooks
                .connect
                .is_some()
                .then(|| parts.headers.clone()),
        })
    }
}

/// Runs the checks every handshake shares and returns who the connection is, or
/// the response that refuses it.
pub(crate) async fn admit(
    rt: &Realtime,
    headers: HandshakeHeaders,
    query_token: Option<&str>,
    transport: Transport,
) -> Result<Admission, Response> {
    if !rt.is_accepting() {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "shutting_down",
            "server is shutting down",
        ));
    }
    let origin = header_text(&headers.origin);
    let host = header_text(&headers.host);
    if !rt.config().origin_policy.permits(origin, host) {
        rt.inner.metrics.rejected("forbidden_origin");
        tracing::debug!(
            origin = origin.unwrap_or(""),
            "handshake from a refused origin"
        );
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "forbidden_origin",
            "this origin may not open connections to this server",
        ));
    }
    let authorization = headers.authorization.as_ref().and_then(|v| v.to_str().ok());
    let hook = rt.config().hooks.connect.clone();
    let identity = match select_token(authorization, query_token).and_then(|token| rt.verify(token))
    {
        Ok(identity) => Some(identity),
        // With a connect hook, a handshake without a token is the hook's to decide.
        Err(AuthError::MissingToken) if hook.is_some() => None,
        Err(e) => {
            rt.inner.metrics.rejected(e.reason());
            tracing::debug!(reason = e.reason(), "handshake rejected");
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                e.reason(),
                &e.to_string(),
            ));
        }
    };
    let Some(hook) = hook else {
        // No hook: the token verified (a missing one was refused above).
        return identity.map(Admission::new).ok_or_else(|| {
            refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing_token",
                "",
            )
        });
    };
    let request = ConnectRequest {
        transport,
        identity,
        headers: headers.all.unwrap_or_default(),
    };
    hook.connect(request).await.map_err(|refused| {
        let status = refused.status();
        rt.inner.metrics.rejected(match status {
            StatusCode::SERVICE_UNAVAILABLE => "proxy_unavailable",
            _ => "proxy_refused",
        });
        tracing::debug!(reason = %refused.reason, "handshake refused by the connect hook");
        let error = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            _ => "proxy_unavailable",
        };
        refusal(status, error, &refused.reason, &refused.message)
    })
}

/// A refused handshake: `status` with `{"error", "reason", "message"}`.
pub(crate) fn refusal(status: StatusCode, error: &str, reason: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "reason": reason, "message": message})),
    )
        .into_response()
}

/// A header as text; a value that is not visible ASCII becomes a NUL, which no
/// origin rule accepts.
pub(crate) fn header_text(value: &Option<HeaderValue>) -> Option<&str> {
    value.as_ref().map(|v| v.to_str().unwrap_or("\u{0}"))
}
