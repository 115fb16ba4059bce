//! A real HTTP webhook receiver for the presence tests: it listens on a free port,
//! records every request it gets, checks each `X-Realtime-Signature` with its own
//! HMAC-SHA256 over the raw body (not the server's code), and can be told to answer
//! 500 to the first N attempts of every event. Tests read its [`Tally`].
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request as it arrived, and what the receiver made of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The body as JSON, if it was.
    pub event: Option<Value>,
    /// Whether the signature header matched this receiver's own HMAC of the body.
    pub signed: bool,
    /// What is wrong with the request besides the signature (headers, body shape).
    pub problems: Vec<String>,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Attempt {
    pub fn id(&self) -> Option<&str> {
        self.event.as_ref()?.get("id")?.as_str()
    }

    pub fn kind(&self) -> Option<&str> {
        self.event.as_ref()?.get("type")?.as_str()
    }
}

/// How the receiver answers a well-signed request: from its path and how many
/// well-signed attempts of the same event came before it.
pub type Policy = Arc<dyn Fn(&str, u32) -> u16 + Send + Sync>;

struct Shared {
    secret: Vec<u8>,
    policy: Policy,
    attempts: watch::Sender<Vec<Attempt>>,
}

/// The receiver; it stops listening when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    attempts: watch::Receiver<Vec<Attempt>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// A receiver that checks signatures with `secret` and answers 200 to every
    /// well-signed POST.
    pub async fn start(secret: &str) -> Receiver {
        Self::failing_first(secret, 0).await
    }

    /// As [`Receiver::start`], but the first `n` attempts of each event (by its
    /// `id`) are answered 500.
    pub async fn failing_first(secret: &str, n: u32) -> Receiver {
        Self::with_policy(
            secret,
            Arc::new(move |_, earlier| if earlier < n { 500 } else { 200 }),
        )
        .await
    }

    /// A receiver that answers every well-signed request as `policy` says.
    pub async fn with_policy(secret: &str, policy: Policy) -> Receiver {
        let (sender, attempts) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            policy,
            attempts: sender,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            shared,
            attempts,
            task,
        }
    }

    /// The URL to configure as `webhook_url`.
    pub fn url(&self) -> String {
        self.url_at("/hooks/presence")
    }

    /// A URL on this receiver with `path`, e.g. one per node so the attempts
    /// show which node made them.
    pub fn url_at(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.borrow().clone()
    }

    pub fn tally(&self) -> Tally {
        Tally::of(&self.attempts.borrow())
    }

    /// Waits (at most `bound`) until the tally satisfies `check`; the receiver
    /// wakes this on every request, so nothing polls.
    pub async fn wait_until(&self, bound: Duration, what: &str, check: impl Fn(&Tally) -> bool) {
        let mut attempts = self.attempts.clone();
        let waited = tokio::time::timeout(bound, attempts.wait_for(|all| check(&Tally::of(all))))
            .await
            .is_ok();
        assert!(
            waited,
            "webhook receiver: {what}: not within {bound:?}; it got {:#?}",
            self.tally().events
        );
    }

    /// Fails the test if any request was badly signed or malformed.
    pub fn assert_all_valid(&self) {
        let bad: Vec<Attempt> = self
            .attempts()
            .into_iter()
            .filter(|a| !a.signed || !a.problems.is_empty())
            .collect();
        assert!(bad.is_empty(), "webhook requests not valid: {bad:#?}");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records the request and answers it: 401 for a missing or wrong signature,
/// otherwise what the policy says.
async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
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
    let event: Option<Value> = serde_json::from_slice(&body).ok();
    let problems = problems(&method, &headers, event.as_ref());
    let mut answered = 0;
    shared.attempts.send_modify(|all| {
        let id = event
            .as_ref()
            .and_then(|e| e.get("id"))
            .and_then(Value::as_str);
        let earlier = all
            .iter()
            .filter(|a| a.signed && id.is_some() && a.id() == id)
            .count() as u32;
        answered = if !signed || event.is_none() {
            401
        } else {
            (shared.policy)(uri.path(), earlier)
        };
        all.push(Attempt {
            at,
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            event: event.clone(),
            signed,
            problems: problems.clone(),
            answered,
        });
    });
    StatusCode::from_u16(answered).unwrap()
}

/// `sha256=<lowercase hex>` of HMAC-SHA256(body, secret), compared in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&String>) -> bool {
    let Some(hex_mac) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    if hex_mac.chars().any(|c| c.is_ascii_uppercase()) {
        return false;
    }
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// What the spec requires of a delivery besides its signature.
fn problems(
    method: &Method,
    headers: &BTreeMap<String, String>,
    event: Option<&Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if method != Method::POST {
        problems.push(format!("method {method}"));
    }
    let header = |name: &str| headers.get(name).map(String::as_str);
    if header("content-type") != Some("application/json") {
        problems.push(format!("content-type {:?}", header("content-type")));
    }
    if !header("user-agent").is_some_and(|ua| ua.starts_with("boundary-realtime/")) {
        problems.push(format!("user-agent {:?}", header("user-agent")));
    }
    let Some(Value::Object(event)) = event else {
        problems.push("body is not a JSON object".into());
        return problems;
    };
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    if field("id").is_none_or(str::is_empty) {
        problems.push("no id".into());
    }
    if header("x-realtime-event-id") != field("id") {
        problems.push(format!(
            "x-realtime-event-id {:?}",
            header("x-realtime-event-id")
        ));
    }
    if header("x-realtime-event") != field("type") {
        problems.push(format!("x-realtime-event {:?}", header("x-realtime-event")));
    }
    let subject = match field("type") {
        Some("user.online" | "user.offline") => "user_id",
        Some("topic.occupied" | "topic.vacated") => "topic",
        other => {
            problems.push(format!("type {other:?}"));
            return problems;
        }
    };
    if field(subject).is_none() {
        problems.push(format!("no {subject}"));
    }
    let expected: std::collections::BTreeSet<&str> = ["id", "type", "timestamp", subject].into();
    let keys: std::collections::BTreeSet<&str> = event.keys().map(String::as_str).collect();
    if keys != expected {
        problems.push(format!("fields {keys:?}"));
    }
    let timestamp = field("timestamp").unwrap_or_default();
    if time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .is_err()
        || !timestamp.ends_with('Z')
    {
        problems.push(format!("timestamp {timestamp:?}"));
    }
    problems
}

/// One event as the receiver saw it: every attempt carrying its id.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    /// When each attempt arrived, in order.
    pub attempts: Vec<Instant>,
    /// The path of each attempt, in order.
    pub paths: Vec<String>,
    /// The paths of the attempts answered 2xx.
    pub delivered_at: Vec<String>,
    /// Whether one attempt was answered 2xx.
    pub delivered: bool,
}

/// The receiver's own count of what it got: events by id, so retries of one event
/// count once and two events about the same thing count twice.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub events: BTreeMap<String, Received>,
}

impl Tally {
    fn of(attempts: &[Attempt]) -> Tally {
        let mut events: BTreeMap<String, Received> = BTreeMap::new();
        for a in attempts {
            let (Some(id), Some(event)) = (a.id(), a.event.as_ref()) else {
                continue;
            };
            let entry = events.entry(id.to_owned()).or_insert_with(|| Received {
                event: event.clone(),
                attempts: Vec::new(),
                paths: Vec::new(),
                delivered_at: Vec::new(),
                delivered: false,
            });
            entry.attempts.push(a.at);
            entry.paths.push(a.path.clone());
            if (200..300).contains(&a.answered) {
                entry.delivered = true;
                entry.delivered_at.push(a.path.clone());
            }
        }
        Tally { events }
    }

    /// Distinct events of `kind` about `subject` (a user id or a topic).
    pub fn about(&self, kind: &str, subject: &str) -> Vec<&Received> {
        self.events
            .values()
            .filter(|r| {
                r.event["type"] == kind
                    && (r.event["user_id"] == subject || r.event["topic"] == subject)
            })
            .collect()
    }

    /// How many distinct events of `kind` about `subject` arrived.
    pub fn count(&self, kind: &str, subject: &str) -> usize {
        self.about(kind, subject).len()
    }

    /// Whether an event of `kind` about `subject` was delivered (answered 2xx).
    pub fn delivered(&self, kind: &str, subject: &str) -> bool {
        self.about(kind, subject).iter().any(|r| r.delivered)
    }
}
