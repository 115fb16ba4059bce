//! A real HTTP backend for the proxy tests: it listens on a free port, answers
//! each path (`/connect`, `/subscribe`, `/publish`) as the test tells it from
//! the request body, can hold answers until the test releases them, checks every
//! `X-Realtime-Signature` with the webhook receiver's own HMAC check (not the
//! server's code), and records every request so tests count what reached it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::webhook_receiver::verify;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` when it was not).
    pub body: Value,
    /// Whether the signature matched this backend's own HMAC of the raw body.
    pub signed: bool,
}

/// How the backend answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Answered only once the test calls [`Backend::release`].
    held: bool,
}

impl Reply {
    /// 200 with `value` as JSON.
    pub fn json(value: Value) -> Reply {
        Reply::status(200, value)
    }

    /// `status` with `value` as JSON.
    pub fn status(status: u16, value: Value) -> Reply {
        Reply::raw(status, "application/json", &value.to_string())
    }

    /// Exactly `body` with `content_type` and `status`.
    pub fn raw(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type,
            body: body.to_owned(),
            held: false,
        }
    }

    /// The same answer, given only once the test releases held answers.
    pub fn held(mut self) -> Reply {
        self.held = true;
        self
    }
}

type Respond = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

struct Shared {
    secret: Vec<u8>,
    responders: Mutex<HashMap<String, Respond>>,
    seen: watch::Sender<Vec<Seen>>,
    released: watch::Sender<bool>,
}

/// The backend; it stops listening when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    seen: watch::Receiver<Vec<Seen>>,
    task: JoinHandle<()>,
}

impl Backend {
    /// A backend checking signatures with `secret`; every path answers 404
    /// until the test says otherwise with [`Backend::on`].
    pub async fn start(secret: &str) -> Backend {
        let (seen_tx, seen) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            responders: Mutex::new(HashMap::new()),
            seen: seen_tx,
            released: watch::channel(false).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            addr,
            shared,
            seen,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers requests to `path` with what `respond` makes of their body.
    pub fn on(&self, path: &str, respond: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        self.shared
            .responders
            .lock()
            .unwrap()
            .insert(path.to_owned(), Arc::new(respond));
    }

    /// Gives every held answer, now and from now on.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.borrow().clone()
    }

    /// The requests to `path` so far.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    /// Waits (at most `bound`) until `n` requests to `path` have arrived; the
    /// backend wakes this on every request, so nothing polls.
    pub async fn wait_for(&self, path: &str, n: usize, bound: Duration) {
        let mut seen = self.seen.clone();
        let arrived = tokio::time::timeout(
            bound,
            seen.wait_for(|all| all.iter().filter(|s| s.path == path).count() >= n),
        )
        .await
        .is_ok();
        assert!(
            arrived,
            "backend: {n} requests to {path} not within {bound:?}; got {:#?}",
            self.seen()
        );
    }

    /// Fails the test unless every request was a signed JSON POST.
    pub fn assert_all_signed(&self) {
        let bad: Vec<Seen> = self
            .seen()
            .into_iter()
            .filter(|s| !s.signed || s.method != "POST" || !s.body.is_object())
            .collect();
        assert!(bad.is_empty(), "requests not signed JSON POSTs: {bad:#?}");
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records the request, then answers 401 to a bad signature, 404 to a path
/// with no responder, and otherwise what the path's responder says (after the
/// release, when held).
async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = verify(&shared.secret, &body, headers.get("x-realtime-signature"));
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let respond = shared.responders.lock().unwrap().get(uri.path()).cloned();
    shared.seen.send_modify(|all| {
        all.push(Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers,
            body: json.clone(),
            signed,
        })
    });
    if !signed {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Some(respond) = respond else {
        return (StatusCode::NOT_FOUND, "no responder").into_response();
    };
    let reply = respond(&json);
    if reply.held {
        let mut released = shared.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}
