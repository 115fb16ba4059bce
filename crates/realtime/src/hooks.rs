//! Backend hooks: the ports the engine consults, when they are set, at the
//! handshake (who is this?), on a client subscribe and on a client publish
//! (may they?). The standalone server implements them as signed HTTP calls to
//! the application backend (its connect, subscribe and publish proxies); an
//! embedding application can implement them with its own sessions or database.
//!
//! A hook that cannot decide (its backend is down, slow or answers garbage)
//! refuses with [`RefusalKind::Unavailable`]: nothing is ever allowed because a
//! backend did not answer. So does a topic whose namespace names a subscribe or
//! publish hook ([`realtime_core::ProxyUse`]) that [`Hooks`] does not set.
//!
//! The engine does not time hooks out: a hook must resolve in bounded time (the
//! standalone server's proxies are bounded by `proxy_timeout`). A handshake
//! waits for the connect hook (and an SSE request for the subscribe hook) before
//! anything is registered, bounded only by the HTTP server's request timeout; a
//! WebSocket's commands are handled one at a time, so while its subscribe or
//! publish hook is pending that connection's heartbeat, writes and close
//! (force disconnect, shutdown) wait behind it.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use futures_util::future::BoxFuture;
use realtime_core::{ConnectionInfo, ErrorCode, Identity, Topic, Transport};
use serde_json::{Map, Value};

/// What the connect hook is told about a handshake.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub transport: Transport,
    /// The identity of the handshake's token, when it carried one that verified.
    /// `None`: no token (a handshake with a token that does not verify is refused
    /// with 401 before any hook runs).
    pub identity: Option<Identity>,
    /// The handshake's request headers, cookies included. The hook forwards only
    /// those it was told to allow.
    pub headers: HeaderMap,
}

/// Who a connection is and what it is subscribed to from its first moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub identity: Identity,
    /// Topics the connection is subscribed to server-side as it opens: no topic
    /// policy check, not counted against `max_subscriptions` (like subscriptions
    /// made through the HTTP API).
    pub topics: Vec<Topic>,
}

impl Admission {
    /// An admission with no server-side topics.
    pub fn new(identity: Identity) -> Self {
        Admission {
            identity,
            topics: Vec::new(),
        }
    }
}

/// How a hook refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not authenticated: a handshake gets 401.
    Unauthorized,
    /// Authenticated but not allowed: a handshake gets 403, a command the
    /// `forbidden` error code.
    Forbidden,
    /// The hook could not decide (its backend is down, timed out or answered
    /// garbage): a handshake gets 503, a command `proxy_unavailable`.
    Unavailable,
}

/// A hook's refusal: its kind, a stable machine-readable `reason`
/// (`[a-z0-9_]`, the backend's own or the hook's) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct HookRefusal {
    pub kind: RefusalKind,
    pub reason: String,
    pub message: String,
}

impl HookRefusal {
    pub fn new(kind: RefusalKind, reason: impl Into<String>, message: impl Into<String>) -> Self {
        HookRefusal {
            kind,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The HTTP status a refused handshake answers with.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RefusalKind::Unauthorized => StatusCode::UNAUTHORIZED,
            RefusalKind::Forbidden => StatusCode::FORBIDDEN,
            RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error code a refused command answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self.kind {
            RefusalKind::Unavailable => ErrorCode::ProxyUnavailable,
            RefusalKind::Unauthorized | RefusalKind::Forbidden => ErrorCode::Forbidden,
        }
    }
}

/// Decides who a handshake is: called for every WebSocket and SSE handshake
/// (after the Origin check and, when a token was given, its verification).
pub trait ConnectHook: Send + Sync + 'static {
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Admission, HookRefusal>>;
}

/// Decides a client's subscribe to a topic whose namespace names the subscribe
/// proxy ([`realtime_core::ProxyUse::subscribe`]), after the topic policy allowed it.
pub trait SubscribeHook: Send + Sync + 'static {
    fn subscribe(
        &self,
        connection: &ConnectionInfo,
        topic: &Topic,
    ) -> BoxFuture<'static, Result<(), HookRefusal>>;
}

/// What the publish hook decided for an allowed publish.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishVerdict {
    /// Publish the message as the client sent it.
    Allow,
    /// Publish this message instead (an object, checked like a client's).
    Replace(Map<String, Value>),
}

/// Decides a client's publish to a topic whose namespace names the publish
/// proxy ([`realtime_core::ProxyUse::publish`]), after the topic policy allowed it.
pub trait PublishHook: Send + Sync + 'static {
    fn publish(
        &self,
        connection: &ConnectionInfo,
        topic: &Topic,
        message: &Map<String, Value>,
    ) -> BoxFuture<'static, Result<PublishVerdict, HookRefusal>>;
}

/// The hooks an engine consults; none by default.
#[derive(Clone, Default)]
pub struct Hooks {
    pub connect: Option<Arc<dyn ConnectHook>>,
    pub subscribe: Option<Arc<dyn SubscribeHook>>,
    pub publish: Option<Arc<dyn PublishHook>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("connect", &self.connect.is_some())
            .field("subscribe", &self.subscribe.is_some())
            .field("publish", &self.publish.is_some())
            .finish()
    }
}
