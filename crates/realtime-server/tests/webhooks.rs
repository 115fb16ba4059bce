//! Webhooks end to end: the real binary (one node, provider `memory`) POSTs
//! presence events to a real HTTP receiver started by the test, which checks
//! every signature with its own HMAC; retries after 500s and while the receiver
//! is down, gives up after `webhook_max_attempts` (counted in /metrics), and
//! debounces offline events by the grace.

mod binary;
mod common;
mod processes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use binary::{Running, start};
use common::{API_KEY, Client, SECRET, token};
use processes::eventually;

const WEBHOOK_SECRET: &str = "webhook-test-secret-0123456789";
/// Upper bound for an event to arrive: the grace, a few backoffs, a slow machine.
const ARRIVAL: Duration = Duration::from_secs(20);

/// One POST the receiver got, with when it got it.
struct Hit {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Hit {
    /// The event, after checking the signature and headers independently of the
    /// server's code: HMAC-SHA256 of the exact body with the shared secret.
    fn verified(&self) -> Value {
        let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
        mac.update(&self.body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = |name: &str| {
            self.headers
                .get(name)
                .unwrap_or_else(|| panic!("no {name} header"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("x-realtime-signature"), format!("sha256={expected}"));
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(
            header("user-agent"),
            format!("boundary-realtime/{}", env!("CARGO_PKG_VERSION"))
        );
        let event: Value = serde_json::from_slice(&self.body).expect("a JSON body");
        assert_eq!(header("x-realtime-event"), event["type"].as_str().unwrap());
        assert_eq!(header("x-realtime-event-id"), event["id"].as_str().unwrap());
        let keys: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert!(
            // serde_json's map is sorted by key.
            keys == ["id", "timestamp", "type", "user_id"]
                || keys == ["id", "timestamp", "topic", "type"],
            "exactly the documented fields: {event}"
        );
        assert!(
            time::OffsetDateTime::parse(
                event["timestamp"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok(),
            "{event}"
        );
        event
    }
}

/// How the receiver answers its n-th POST (0-based): a status, or [`HANG`].
type Answer = Arc<dyn Fn(usize) -> u16 + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    count: Arc<AtomicUsize>,
    hits: mpsc::UnboundedSender<Hit>,
    answer: Answer,
}

/// A real HTTP receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
    count: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(answer: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), answer)
    }

    fn on(
        listener: TcpListener,
        answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
    ) -> Receiver {
        let (tx, hits) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        let state = ReceiverState {
            count: count.clone(),
            hits: tx,
            answer: Arc::new(answer),
        };
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, hits, count }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The next POST, bounded by [`ARRIVAL`].
    async fn next(&mut self) -> Hit {
        tokio::time::timeout(ARRIVAL, self.hits.recv())
            .await
            .expect("a webhook POST in time")
            .expect("receiver alive")
    }

    /// The next POST's verified event.
    async fn next_event(&mut self) -> Value {
        self.next().await.verified()
    }

    fn received(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = s.count.fetch_add(1, Ordering::SeqCst);
    let _ = s.hits.send(Hit {
        at: Instant::now(),
        headers,
        body,
    });
    match (s.answer)(n) {
        // Never answers: the attempt stays in flight until the sender gives up.
        HANG => std::future::pending().await,
        status => StatusCode::from_u16(status).unwrap(),
    }
}

/// An answer that never comes.
const HANG: u16 = 0;

/// The presence namespace the topic events are about.
const CONFIG: &str = r#"
[[namespaces]]
pattern = "room"
subscribe = "authenticated"
publish = "nobody"
presence = true
"#;

/// The binary with webhooks to `url` and `extra` variables.
async fn node(url: &str, extra: &[(&str, &str)]) -> Running {
    let dir = std::env::temp_dir().join(format!("rt-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("realtime.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut env = vec![
        ("REALTIME_LISTEN", "127.0.0.1:0"),
        ("REALTIME_JWT_SECRET", SECRET),
        ("REALTIME_API_KEY", API_KEY),
        ("REALTIME_WEBHOOK_URL", url),
        ("REALTIME_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("REALTIME_PRESENCE_OFFLINE_GRACE", "1s"),
        ("REALTIME_LOG", "info"),
        ("REALTIME_CONFIG", config.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    start(&env, &[]).await.listening()
}

async fn connect(node: &Running, user: &str) -> Client {
    let mut client = Client::connect(&format!(
        "ws://{}/ws?token={}",
        node.local(),
        token(user, &[])
    ))
    .await;
    assert_eq!(client.recv().await["type"], "welcome");
    client
}

/// `name{labels} value` from the node's /metrics, 0 when absent.
async fn metric(node: &Running, series: &str) -> f64 {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_text(node: &Running) -> String {
    reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn online_then_offline_after_the_grace_all_signed() {
    let mut receiver = Receiver::start(|_| 200).await;
    let node = node(&receiver.url(), &[]).await;
    let alice = connect(&node, "alice").await;
    let online = receiver.next_event().await;
    assert_eq!(
        (&online["type"], &online["user_id"]),
        (&json!("user.online"), &json!("alice"))
    );

    let closed = Instant::now();
    drop(alice);
    let offline = receiver.next().await;
    let event = offline.verified();
    assert_eq!(
        (&event["type"], &event["user_id"]),
        (&json!("user.offline"), &json!("alice"))
    );
    assert!(
        offline.at - closed >= Duration::from_millis(900),
        "sent after the grace, not before: {:?}",
        offline.at - closed
    );
    assert_ne!(online["id"], event["id"], "each event has its own id");

    // The receiver has the request before the sender has read the answer and
    // counted it: wait for the count, within a bound.
    let wanted = [
        "realtime_webhook_events_total{type=\"user.online\"} 1",
        "realtime_webhook_events_total{type=\"user.offline\"} 1",
        "realtime_webhook_deliveries_total{outcome=\"delivered\"} 2",
        "realtime_webhook_delivery_seconds_count 2",
        "realtime_webhook_in_flight 0",
        "realtime_webhook_queue_depth",
        "realtime_webhook_dropped_total 0",
    ];
    eventually(
        Duration::from_secs(10),
        "webhook metrics count both deliveries",
        || async {
            let text = metrics_text(&node).await;
            wanted.iter().all(|name| text.contains(name))
        },
    )
    .await;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_sends_no_offline() {
    let mut receiver = Receiver::start(|_| 200).await;
    let node = node(
        &receiver.url(),
        &[("REALTIME_PRESENCE_OFFLINE_GRACE", "2s")],
    )
    .await;
    let bob = connect(&node, "bob").await;
    assert_eq!(receiver.next_event().await["user_id"], "bob");
    // A page reload: closed, and back at once.
    drop(bob);
    let _bob = connect(&node, "bob").await;

    // Carol leaves after Bob came back, so her offline falls due after the one
    // Bob would have had: once hers is here, his would have been too.
    let carol = connect(&node, "carol").await;
    let carol_online = receiver.next_event().await;
    assert_eq!(
        (&carol_online["type"], &carol_online["user_id"]),
        (&json!("user.online"), &json!("carol"))
    );
    drop(carol);
    let carol_offline = receiver.next_event().await;
    assert_eq!(
        (&carol_offline["type"], &carol_offline["user_id"]),
        (&json!("user.offline"), &json!("carol")),
        "no event for bob came first"
    );
    assert_eq!(
        receiver.received(),
        3,
        "bob online, carol online and offline"
    );
}

#[tokio::test]
async fn a_presence_topic_is_occupied_then_vacated() {
    let mut receiver = Receiver::start(|_| 200).await;
    let node = node(&receiver.url(), &[]).await;
    let mut dana = connect(&node, "dana").await;
    assert_eq!(receiver.next_event().await["type"], "user.online");

    dana.subscribe_acked("room:1").await;
    let occupied = receiver.next_event().await;
    assert_eq!(
        occupied,
        json!({"id": occupied["id"], "type": "topic.occupied",
        "timestamp": occupied["timestamp"], "topic": "room:1"})
    );
    // A topic without presence emits nothing.
    dana.subscribe_acked("lobby").await;

    let reply = dana
        .command(json!({"action": "unsubscribe", "topic": "room:1", "ref": "u"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    let vacated = receiver.next_event().await;
    assert_eq!(
        (&vacated["type"], &vacated["topic"]),
        (&json!("topic.vacated"), &json!("room:1"))
    );
    drop(dana);
    assert_eq!(receiver.next_event().await["type"], "user.offline");
    assert_eq!(receiver.received(), 4);
}

#[tokio::test]
async fn a_receiver_that_answers_500_twice_gets_the_event_on_the_third_try() {
    let mut receiver = Receiver::start(|n| if n < 2 { 500 } else { 200 }).await;
    let node = node(&receiver.url(), &[]).await;
    let _erin = connect(&node, "erin").await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    let third = receiver.next().await;
    let event = first.verified();
    assert_eq!(event["type"], "user.online");
    for retry in [&second, &third] {
        assert_eq!(retry.body, first.body, "the same body, id included");
        assert_eq!(retry.verified(), event);
    }
    // Backoff 1 s then 2 s, each within ±10%.
    assert!(
        second.at - first.at >= Duration::from_millis(850),
        "{:?}",
        second.at - first.at
    );
    assert!(
        third.at - first.at >= Duration::from_millis(2600),
        "{:?}",
        third.at - first.at
    );
    eventually(ARRIVAL, "the delivery is counted", || async {
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"delivered\"}",
        )
        .await
            == 1.0
    })
    .await;
    assert_eq!(
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"retried\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_once_it_is_up() {
    // Nothing listens on the port yet: every attempt is refused.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks");
    let node = node(&url, &[]).await;
    let _fay = connect(&node, "fay").await;
    eventually(ARRIVAL, "a refused attempt is retried", || async {
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"retried\"}",
        )
        .await
            >= 1.0
    })
    .await;
    let mut receiver = Receiver::on(
        TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        |_| 200,
    );
    let event = receiver.next_event().await;
    assert_eq!(
        (&event["type"], &event["user_id"]),
        (&json!("user.online"), &json!("fay"))
    );
    eventually(ARRIVAL, "the delivery is counted", || async {
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"delivered\"}",
        )
        .await
            == 1.0
    })
    .await;
    assert_eq!(
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"failed\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn an_event_is_given_up_after_the_last_attempt_and_counted_failed() {
    let mut receiver = Receiver::start(|_| 503).await;
    let node = node(&receiver.url(), &[("REALTIME_WEBHOOK_MAX_ATTEMPTS", "2")]).await;
    let _gus = connect(&node, "gus").await;
    let first = receiver.next().await.verified();
    let second = receiver.next().await.verified();
    assert_eq!(first, second);
    eventually(ARRIVAL, "the event is counted failed", || async {
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"failed\"}",
        )
        .await
            == 1.0
    })
    .await;
    // Counted failed after the second answer: no third attempt was started.
    assert_eq!(receiver.received(), 2);
    assert_eq!(
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"retried\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &node,
            "realtime_webhook_deliveries_total{outcome=\"delivered\"}"
        )
        .await,
        0.0
    );
    assert_eq!(metric(&node, "realtime_webhook_in_flight").await, 0.0);
}

/// An in-process server with webhooks to `url`, stopping within `shutdown`.
async fn in_process(url: &str, shutdown: &str) -> common::TestServer {
    common::TestServer::start_with(realtime_server::Options {
        webhook_url: Some(url.to_owned()),
        webhook_secret: Some(WEBHOOK_SECRET.to_owned()),
        shutdown_timeout: Some(humantime::parse_duration(shutdown).unwrap()),
        ..common::options()
    })
    .await
}

#[tokio::test]
async fn shutdown_gives_an_attempt_in_flight_a_bounded_moment() {
    let mut receiver = Receiver::start(|_| HANG).await;
    let server = in_process(&receiver.url(), "1s").await;
    let _hana = server.connect("hana", &[]).await;
    assert_eq!(receiver.next().await.verified()["type"], "user.online");
    let stopping = Instant::now();
    let clean = tokio::time::timeout(ARRIVAL, server.shutdown())
        .await
        .expect("shutdown ends although the receiver never answers");
    assert!(!clean, "an attempt was still in flight: not a clean stop");
    assert!(
        stopping.elapsed() >= Duration::from_millis(900),
        "it was given the budget"
    );
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_retry() {
    let mut receiver = Receiver::start(|_| 500).await;
    let server = in_process(&receiver.url(), "30s").await;
    let ivan = server.connect("ivan", &[]).await;
    receiver.next().await.verified();
    // The sender keeps delivering while connections close; with none left
    // the stop comes straight to it.
    drop(ivan);
    server.wait_for_connections(0).await;
    // The sender now waits a second before the retry; the stop ends that wait
    // and leaves the event queued (`user.offline` is a grace away).
    eventually(ARRIVAL, "the failed attempt is counted", || async {
        server
            .metrics_text()
            .await
            .contains("realtime_webhook_deliveries_total{outcome=\"retried\"} 1")
    })
    .await;
    let clean = tokio::time::timeout(ARRIVAL, server.shutdown())
        .await
        .expect("shutdown ends");
    assert!(clean, "nothing was in flight");
    assert_eq!(receiver.received(), 1, "no retry once stopping");
}
