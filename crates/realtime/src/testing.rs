//! In-process test connections: register a connection with no socket and read what
//! it is sent. For application tests of code that calls the [`Realtime`] API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use realtime::{Realtime, RealtimeConfig, testing::TestConnection};
//! use serde_json::json;
//!
//! let rt = Realtime::new(realtime::testing::RejectAll, RealtimeConfig::default());
//! let mut alice = TestConnection::connect(&rt, "alice", &["admin"]);
//! let delivery = rt.send_to_role("admin", json!({"type": "alert"})).unwrap();
//! assert_eq!((delivery.local, delivery.relayed), (1, false));
//! assert_eq!(alice.recv().await.unwrap()["type"], "alert");
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use realtime_core::{AuthError, CloseCode, ConnectionId, Identity};
use serde_json::Value;

use crate::auth::TokenVerifier;
use crate::handle::ConnectionHandle;
use crate::service::Realtime;

/// A registered connection whose frames land in memory instead of a socket. It is
/// indexed, routed to, subscribed and counted exactly like a socket connection
/// (no welcome frame is queued). When the engine closes it (slow consumer,
/// disconnect, shutdown) it is unregistered, as a socket's session would do, as
/// long as it was created inside a tokio runtime; dropping it always unregisters it.
pub struct TestConnection {
    rt: Realtime,
    handle: Arc<ConnectionHandle>,
    /// Frames taken from the connection's queue and not yet returned.
    received: VecDeque<Utf8Bytes>,
    /// Plays the session's part: unregisters the connection when the engine
    /// closes it (slow consumer, disconnect, shutdown).
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl TestConnection {
    /// Registers a connection for `user_id` with `roles`.
    pub fn connect(rt: &Realtime, user_id: &str, roles: &[&str]) -> TestConnection {
        Self::connect_identity(
            rt,
            Identity {
                user_id: user_id.to_owned(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                metadata: Default::default(),
                expires_at: None,
            },
        )
    }

    /// Registers a connection with a full identity. Token expiry and the command
    /// rate limit belong to the socket session and do not apply here.
    ///
    /// # Panics
    ///
    /// When the user already holds `max_connections_per_user` connections.
    pub fn connect_identity(rt: &Realtime, identity: Identity) -> TestConnection {
        // Interest and directory changes are requested here; the in-memory bus
        // applies them at once.
        let expires_at = identity.expires_at;
        let info = rt.new_connection(identity, realtime_core::Transport::Websocket);
        let (handle, _ready) = rt
            .open_connection(info, expires_at, |_| None)
            .expect("TestConnection: the user already has max_connections_per_user connections");
        rt.activate(&handle);
        let watcher = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (rt, handle) = (rt.clone(), handle.clone());
            runtime.spawn(async move {
                handle.closed().await;
                rt.connection_closed(&handle);
            })
        });
        TestConnection {
            rt: rt.clone(),
            handle,
            received: VecDeque::new(),
            watcher,
        }
    }

    pub fn id(&self) -> ConnectionId {
        self.handle.id()
    }

    /// The next frame, parsed; `None` once the connection was closed and its
    /// queue is empty.
    pub async fn recv(&mut self) -> Option<Value> {
        if self.received.is_empty() {
            let mut batch = VecDeque::new();
            tokio::select! {
                biased;
                () = self.handle.outbox().take(&mut batch) => {}
                () = self.handle.closed() => {
                    self.handle.outbox().try_take(&mut batch);
                }
            }
            self.received = batch;
        }
        self.received.pop_front().map(parse)
    }

    /// The next frame if one is already queued.
    pub fn try_recv(&mut self) -> Option<Value> {
        if self.received.is_empty() {
            let mut batch = VecDeque::new();
            self.handle.outbox().try_take(&mut batch);
            self.received = batch;
        }
        self.received.pop_front().map(parse)
    }

    /// Every frame queued so far.
    pub fn drain(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    /// Runs a client command (`{"action": "subscribe", ...}`) as the connection's
    /// socket session would, client topic policy included, and returns the reply
    /// frame. The reply is returned, not queued: [`recv`](Self::recv) sees only
    /// what the engine sends, such as the messages a publish delivered. A
    /// subscribe on a history topic queues its reply ahead of its replay, as on a
    /// socket; it is returned here as the next queued frame.
    pub async fn command(&mut self, frame: Value) -> Value {
        let text = frame.to_string();
        match crate::commands::handle_text(&self.rt, &self.handle, &text).await {
            Some(reply) => serde_json::from_str(&reply).expect("command replies are JSON"),
            None => self.recv().await.expect("the queued reply"),
        }
    }

    /// The close code, once the engine closed this connection (e.g. 3008 when its
    /// queue overflowed, 3503 after `disconnect`).
    pub fn close_code(&self) -> Option<CloseCode> {
        self.handle.close_code()
    }
}

impl Drop for TestConnection {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        self.rt.connection_closed(&self.handle);
    }
}

fn parse(frame: Utf8Bytes) -> Value {
    serde_json::from_str(&frame).unwrap_or(Value::String(frame.to_string()))
}

/// A verifier that rejects every token: for engines used only through
/// [`TestConnection`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectAll;

impl TokenVerifier for RejectAll {
    fn verify(&self, _token: &str, _now: SystemTime) -> Result<Identity, AuthError> {
        Err(AuthError::BadSignature)
    }
}
