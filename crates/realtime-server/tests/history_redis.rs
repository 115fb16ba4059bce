//! The Redis history store against a real `redis-server` (started by the test on
//! a free port): offsets assigned by Redis across nodes, every append published
//! once and in offset order in the same step, reads, expiry, reset, lost and
//! persisted data, retries applied once, the outbox bound, and the bus's
//! `Resumed` mark between subscriber connections. Tallies are the tests' own
//! sequence numbers in the payloads, checked against what Redis holds and what
//! a plain SUBSCRIBE client saw.

mod common;
mod processes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::WAIT;
use futures_util::{FutureExt, StreamExt};
use processes::{RedisServer, START, eventually};
use prometheus_client::registry::Registry;
use realtime::cluster::bus::{BusEvent, MessageBus};
use realtime::history::{AppendRequest, HistoryError, HistoryStore, ReadRequest, StoredPage};
use realtime_core::history::WirePublication;
use realtime_core::{Channels, HistoryLimits, NodeTag, Position, Topic};
use realtime_redis::{BusLink, RedisCluster, RedisConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn redis_query<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut redis_connection(url).await)
        .await
        .unwrap()
}

/// A node's view of Redis: its cluster (bus started, both links up) and metrics.
struct Store {
    cluster: RedisCluster,
    registry: Registry,
    prefix: String,
}

impl Store {
    async fn start(url: &str, prefix: &str) -> Store {
        Store::start_with(url, prefix, |_| {}, Arc::new(|_: BusEvent<'_>| {})).await
    }

    async fn start_with(
        url: &str,
        prefix: &str,
        configure: impl FnOnce(&mut RedisConfig),
        inbox: realtime::cluster::bus::Inbox,
    ) -> Store {
        let mut config = RedisConfig::new(url);
        config.prefix = prefix.into();
        configure(&mut config);
        let cluster = RedisCluster::new(config).unwrap();
        let mut registry = Registry::default();
        cluster.bus().register_metrics(&mut registry);
        cluster
            .bus()
            .start(inbox, vec![format!("{prefix}:resumed-probe")]);
        assert!(cluster.wait_until_up(START).await, "links up");
        Store {
            cluster,
            registry,
            prefix: prefix.into(),
        }
    }

    fn history(&self) -> Arc<realtime_redis::RedisHistory> {
        self.cluster.history()
    }

    fn channel(&self, topic: &str) -> String {
        Channels::new(self.prefix.clone()).topic(topic)
    }

    fn stream_key(&self, topic: &str) -> String {
        format!("{}:history:{topic}", self.prefix)
    }

    fn append(
        &self,
        topic: &str,
        limits: HistoryLimits,
        origin: NodeTag,
        seq: u64,
        epoch: &str,
    ) -> realtime::history::PositionFuture {
        self.history()
            .append(request(self, topic, limits, origin, seq, epoch))
    }

    async fn read(
        &self,
        topic: &str,
        limits: HistoryLimits,
        after: Option<u64>,
        limit: usize,
        epoch: &str,
    ) -> StoredPage {
        self.history()
            .read(ReadRequest {
                topic: Topic::parse(topic).unwrap(),
                limits,
                after,
                limit,
                new_epoch: epoch.into(),
            })
            .await
            .expect("read")
    }

    fn metric(&self, series: &str) -> Option<f64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The publication `seq` of `origin`, its number in the body.
fn request(
    store: &Store,
    topic: &str,
    limits: HistoryLimits,
    origin: NodeTag,
    seq: u64,
    epoch: &str,
) -> AppendRequest {
    AppendRequest {
        topic: Topic::parse(topic).unwrap(),
        limits,
        payload: json!({"type": "n", "topic": topic, "node": origin.as_u64(), "n": seq})
            .to_string(),
        channel: store.channel(topic),
        origin,
        seq,
        new_epoch: epoch.into(),
    }
}

fn limits(size: u64, ttl: Duration) -> HistoryLimits {
    HistoryLimits::new(size, ttl).unwrap()
}

fn minute() -> Duration {
    Duration::from_secs(60)
}

fn pos(offset: u64, epoch: &str) -> Position {
    Position {
        offset,
        epoch: epoch.into(),
    }
}

/// A plain Redis client subscribed to `channel`, seeing what Redis publishes.
async fn subscriber(url: &str, channel: &str) -> redis::aio::PubSub {
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub
}

/// The next `n` publications the plain subscriber sees, decoded.
async fn next_publications(pubsub: &mut redis::aio::PubSub, n: usize) -> Vec<(u64, String, Value)> {
    let mut stream = pubsub.on_message();
    let mut seen = Vec::new();
    while seen.len() < n {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a publication in time")
            .unwrap();
        let bytes = msg.get_payload_bytes();
        let wire = WirePublication::decode(bytes).expect("Redis published a wire publication");
        seen.push((
            wire.offset,
            wire.epoch.to_owned(),
            serde_json::from_slice(wire.payload).unwrap(),
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_get_consecutive_offsets_each_published_once_in_offset_order() {
    const PER_NODE: u64 = 150;
    const SIZE: u64 = 40;
    let redis = RedisServer::start().await;
    let a = Store::start(&redis.url(), "h").await;
    let b = Store::start(&redis.url(), "h").await;
    let topic = "scores:final";
    let mut watcher = subscriber(&redis.url(), &a.channel(topic)).await;
    let window = limits(SIZE, minute());

    // Both nodes append at once; each queues all its appends before awaiting any.
    let node = |store: &Store, tag: u64| {
        let origin = NodeTag::from_random(tag);
        let futures: Vec<_> = (1..=PER_NODE)
            .map(|seq| store.append(topic, window, origin, seq, &format!("epoch-{tag}")))
            .collect();
        async move {
            let mut positions = Vec::new();
            for f in futures {
                positions.push(f.await.expect("append"));
            }
            positions
        }
    };
    let (from_a, from_b) = tokio::join!(node(&a, 1), node(&b, 2));

    let epoch = from_a[0].epoch.clone();
    assert!(epoch == "epoch-1" || epoch == "epoch-2", "{epoch}");
    let mut offsets: Vec<u64> = Vec::new();
    for positions in [&from_a, &from_b] {
        assert!(positions.iter().all(|p| p.epoch == epoch), "one epoch");
        let mine: Vec<u64> = positions.iter().map(|p| p.offset).collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "a node's appends are applied in the order it asked: {mine:?}"
        );
        offsets.extend(mine);
    }
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        (1..=2 * PER_NODE).collect::<Vec<_>>(),
        "distinct, consecutive"
    );

    // Live: every append exactly once, in offset order, with the position it got.
    let seen = next_publications(&mut watcher, (2 * PER_NODE) as usize).await;
    assert_eq!(
        seen.iter().map(|(o, _, _)| *o).collect::<Vec<_>>(),
        (1..=2 * PER_NODE).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|(_, e, _)| *e == epoch));
    for (tag, positions) in [(1, &from_a), (2, &from_b)] {
        let origin = NodeTag::from_random(tag).as_u64();
        let live: Vec<(u64, u64)> = seen
            .iter()
            .filter(|(_, _, body)| body["node"] == origin)
            .map(|(offset, _, body)| (body["n"].as_u64().unwrap(), *offset))
            .collect();
        let answered: Vec<(u64, u64)> = (1..=PER_NODE)
            .zip(positions.iter().map(|p| p.offset))
            .collect();
        assert_eq!(
            live, answered,
            "node {tag}: published with the offset answered"
        );
    }

    // Nothing more: the next publication seen is the next append.
    let marker = a
        .append(
            topic,
            window,
            NodeTag::from_random(1),
            PER_NODE + 1,
            "unused",
        )
        .await
        .unwrap();
    assert_eq!(marker, pos(2 * PER_NODE + 1, &epoch));
    let next = next_publications(&mut watcher, 1).await;
    assert_eq!(next[0].0, marker.offset, "no publication was seen twice");

    // The stream holds exactly the last SIZE.
    let total = 2 * PER_NODE + 1;
    let key = a.stream_key(topic);
    assert_eq!(
        redis_query::<u64>(&redis.url(), &["XLEN", &key]).await,
        SIZE
    );
    let page = a.read(topic, window, None, 1000, "unused").await;
    assert_eq!(page.state.epoch, epoch);
    assert_eq!(
        (page.state.first, page.state.top),
        (total - SIZE + 1, total)
    );
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        (total - SIZE + 1..=total).collect::<Vec<_>>()
    );
    // A stored payload is the one appended, without its position.
    let last: Value = serde_json::from_str(&page.publications.last().unwrap().payload).unwrap();
    assert_eq!(last, next[0].2);
    assert!(last.get("offset").is_none());

    let text_a = a.metric("realtime_history_appends_total").unwrap();
    let text_b = b.metric("realtime_history_appends_total").unwrap();
    assert_eq!((text_a, text_b), ((PER_NODE + 1) as f64, PER_NODE as f64));
}

#[tokio::test]
async fn reads_answer_pages_after_an_offset_with_first_and_top() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "r").await;
    let window = limits(10, minute());
    let origin = NodeTag::from_random(7);
    for seq in 1..=25 {
        store
            .append("feed", window, origin, seq, "e1")
            .await
            .unwrap();
    }
    // Held: 16..=25.
    let page = store.read("feed", window, Some(18), 3, "unused").await;
    assert_eq!((page.state.first, page.state.top), (16, 25));
    assert_eq!(page.state.epoch, "e1");
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![19, 20, 21]
    );
    let body: Value = serde_json::from_str(&page.publications[0].payload).unwrap();
    assert_eq!(body["n"], 19, "the payload of offset 19");
    // From the oldest held; after a trimmed offset: what is held; at the top: nothing.
    let oldest = store.read("feed", window, None, 2, "unused").await;
    assert_eq!(
        oldest
            .publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![16, 17]
    );
    let trimmed = store.read("feed", window, Some(3), 100, "unused").await;
    assert_eq!(trimmed.publications.first().map(|p| p.offset), Some(16));
    assert_eq!(trimmed.publications.len(), 10);
    assert!(
        store
            .read("feed", window, Some(25), 100, "unused")
            .await
            .publications
            .is_empty()
    );
    // Limit 0 reads only the position.
    let position = store.read("feed", window, Some(18), 0, "unused").await;
    assert!(position.publications.is_empty());
    assert_eq!((position.state.first, position.state.top), (16, 25));
    // An offset no epoch could reach reads nothing rather than failing.
    assert!(
        store
            .read("feed", window, Some(u64::MAX), 10, "unused")
            .await
            .publications
            .is_empty()
    );

    // An empty topic answers a stable position that later appends continue.
    let first = store.read("quiet", window, None, 10, "q1").await;
    let again = store.read("quiet", window, None, 10, "q2").await;
    assert_eq!(first.state.position(), pos(0, "q1"));
    assert_eq!(again.state.position(), pos(0, "q1"), "the same epoch twice");
    assert_eq!(first.state.first, 1);
    assert_eq!(
        store
            .append("quiet", window, origin, 26, "q3")
            .await
            .unwrap(),
        pos(1, "q1")
    );
    assert_eq!(store.metric("realtime_history_reads_total"), Some(8.0));
    assert_eq!(
        store.metric("realtime_history_errors_total{op=\"read\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn expired_publications_are_gone_and_the_position_is_kept() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "x").await;
    let short = limits(100, Duration::from_secs(1));
    let origin = NodeTag::from_random(3);
    for seq in 1..=3 {
        store
            .append("brief", short, origin, seq, "e1")
            .await
            .unwrap();
    }
    let key = store.stream_key("brief");
    let url = redis.url();
    assert_eq!(redis_query::<u64>(&url, &["XLEN", &key]).await, 3);
    eventually(WAIT, "the stream expires", || {
        let (url, key) = (url.clone(), key.clone());
        async move { redis_query::<u64>(&url, &["EXISTS", &key]).await == 0 }
    })
    .await;
    let page = store.read("brief", short, Some(1), 10, "e2").await;
    assert!(page.publications.is_empty(), "the publications expired");
    assert_eq!(page.state.position(), pos(3, "e1"), "the position stayed");
    assert_eq!(page.state.first, 4, "nothing held");
    assert_eq!(
        store.append("brief", short, origin, 4, "e3").await.unwrap(),
        pos(4, "e1"),
        "appends continue the position"
    );
}

#[tokio::test]
async fn a_reset_starts_a_new_epoch_at_offset_zero() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "z").await;
    let window = limits(100, minute());
    let origin = NodeTag::from_random(4);
    for seq in 1..=5 {
        store
            .append("board", window, origin, seq, "e1")
            .await
            .unwrap();
    }
    let history = store.history();
    let topic = Topic::parse("board").unwrap();
    assert_eq!(
        history.reset(&topic, window, "r1".into()).await.unwrap(),
        pos(0, "r1")
    );
    let page = store.read("board", window, None, 100, "unused").await;
    assert_eq!(page.state.position(), pos(0, "r1"));
    assert_eq!(page.state.first, 1);
    assert!(page.publications.is_empty());
    let key = store.stream_key("board");
    assert_eq!(redis_query::<u64>(&redis.url(), &["EXISTS", &key]).await, 0);
    assert_eq!(
        store
            .append("board", window, origin, 6, "e2")
            .await
            .unwrap(),
        pos(1, "r1")
    );
    // The same reset again (a re-sent one) keeps what was appended since.
    assert_eq!(
        history.reset(&topic, window, "r1".into()).await.unwrap(),
        pos(0, "r1")
    );
    assert_eq!(
        store
            .read("board", window, None, 0, "unused")
            .await
            .state
            .top,
        1
    );
    assert_eq!(store.metric("realtime_history_resets_total"), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_data_starts_a_new_epoch() {
    let mut redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "l").await;
    let window = limits(100, minute());
    let origin = NodeTag::from_random(5);
    for seq in 1..=3 {
        store
            .append("ledger", window, origin, seq, "e1")
            .await
            .unwrap();
    }
    let _: () = redis_query(&redis.url(), &["FLUSHALL"]).await;
    let page = store.read("ledger", window, Some(3), 10, "e2").await;
    assert_eq!(page.state.position(), pos(0, "e2"), "FLUSHALL: a new epoch");
    assert_eq!(
        store
            .append("ledger", window, origin, 4, "e3")
            .await
            .unwrap(),
        pos(1, "e2")
    );
    assert_eq!(
        store
            .append("fresh", window, origin, 5, "f1")
            .await
            .unwrap(),
        pos(1, "f1"),
        "an append on a topic without position starts its epoch"
    );

    // Restarted without persistence: everything is gone.
    redis.kill().await;
    assert!(store.cluster.bus().wait_until_down(WAIT).await);
    redis.restart().await;
    assert!(store.cluster.wait_until_up(WAIT).await);
    assert_eq!(
        store
            .append("ledger", window, origin, 6, "e4")
            .await
            .unwrap(),
        pos(1, "e4"),
        "a restart without data: a new epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_appendonly_keeps_the_epoch_and_offsets() {
    let dir = std::env::temp_dir().join(format!("history-aof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let persistent = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir_arg.as_str(),
    ];
    let mut redis = RedisServer::start_with_args(&persistent).await;
    let store = Store::start(&redis.url(), "p").await;
    let window = limits(100, minute());
    let origin = NodeTag::from_random(6);
    for seq in 1..=5 {
        assert_eq!(
            store
                .append("orders", window, origin, seq, "e1")
                .await
                .unwrap(),
            pos(seq, "e1")
        );
    }
    redis.kill().await;
    assert!(store.cluster.bus().wait_until_down(WAIT).await);
    redis.restart_with_args(&persistent).await;
    assert!(store.cluster.wait_until_up(WAIT).await);

    let page = store.read("orders", window, None, 100, "e2").await;
    assert_eq!(page.state.position(), pos(5, "e1"), "the same epoch");
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        store
            .append("orders", window, origin, 6, "e3")
            .await
            .unwrap(),
        pos(6, "e1"),
        "offsets continue"
    );
    redis.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_same_append_twice_is_applied_once() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "i").await;
    let window = limits(100, minute());
    let origin = NodeTag::from_random(8);
    let mut watcher = subscriber(&redis.url(), &store.channel("once")).await;
    let req = request(&store, "once", window, origin, 1, "e1");
    let history = store.history();
    let first = history.append(req.clone()).await.unwrap();
    let again = history.append(req).await.unwrap();
    assert_eq!(first, pos(1, "e1"));
    assert_eq!(again, first, "the original position");
    assert_eq!(
        store.append("once", window, origin, 2, "e1").await.unwrap(),
        pos(2, "e1")
    );
    let key = store.stream_key("once");
    assert_eq!(redis_query::<u64>(&redis.url(), &["XLEN", &key]).await, 2);
    // Published once: the next publication after offset 1 is offset 2.
    let seen = next_publications(&mut watcher, 2).await;
    assert_eq!(
        seen.iter()
            .map(|(o, _, b)| (*o, b["n"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
}

/// A TCP proxy to Redis that, once armed, passes on the next chunk carrying an
/// EVALSHA and then breaks the connection instead of passing on its reply: the
/// script ran, its caller never hears of it.
struct ReplyCutter {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl ReplyCutter {
    async fn start(upstream: u16) -> ReplyCutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let trigger = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                tokio::spawn(cut_after_evalsha(client, upstream, trigger.clone()));
            }
        });
        ReplyCutter { port, armed }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn cut_after_evalsha(client: TcpStream, upstream: TcpStream, armed: Arc<AtomicBool>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut up_rx, mut up_tx) = upstream.into_split();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_up = cut.clone();
    let requests = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if chunk.windows(7).any(|w| w == b"EVALSHA") && armed.swap(false, Ordering::SeqCst) {
                cut_up.store(true, Ordering::SeqCst);
            }
            if up_tx.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match up_rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            break;
        }
        if client_tx.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Dropping both halves closes the client's socket: its reply is lost.
    requests.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_was_lost_is_sent_again_and_applied_once() {
    let redis = RedisServer::start().await;
    let cutter = ReplyCutter::start(redis.port).await;
    let store = Store::start(&cutter.url(), "c").await;
    let window = limits(100, minute());
    let origin = NodeTag::from_random(9);
    let mut watcher = subscriber(&redis.url(), &store.channel("retried")).await;

    cutter.armed.store(true, Ordering::SeqCst);
    let position = tokio::time::timeout(WAIT, store.append("retried", window, origin, 1, "e1"))
        .await
        .expect("answered after the reconnect")
        .unwrap();
    assert_eq!(position, pos(1, "e1"), "the position of the first run");
    assert!(!cutter.armed.load(Ordering::SeqCst), "the reply was cut");
    assert_eq!(
        store.metric("realtime_bus_reconnects_total{link=\"publisher\"}"),
        Some(1.0),
        "the publisher reconnected and sent it again"
    );
    assert_eq!(
        store
            .append("retried", window, origin, 2, "e1")
            .await
            .unwrap(),
        pos(2, "e1")
    );
    let key = store.stream_key("retried");
    assert_eq!(redis_query::<u64>(&redis.url(), &["XLEN", &key]).await, 2);
    let seen = next_publications(&mut watcher, 2).await;
    assert_eq!(
        seen.iter().map(|(o, _, _)| *o).collect::<Vec<_>>(),
        vec![1, 2],
        "published once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_refused_at_once_when_the_outbox_is_full_or_the_publisher_down() {
    let mut redis = RedisServer::start().await;
    let store = Store::start_with(
        &redis.url(),
        "b",
        |config| {
            config.outbox_capacity = 4;
            // Redis pauses below; the link must stay up so only the bound refuses.
            config.command_timeout = Duration::from_secs(60);
        },
        Arc::new(|_: BusEvent<'_>| {}),
    )
    .await;
    let window = limits(1000, minute());
    let origin = NodeTag::from_random(10);
    let _: () = redis_query(&redis.url(), &["CLIENT", "PAUSE", "2000", "ALL"]).await;
    // More than one publisher batch (256) and the queue (4) can hold.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for seq in 1..=300 {
        let mut append = store.append("paused", window, origin, seq, "e1");
        match (&mut append).now_or_never() {
            Some(Err(HistoryError::Unavailable(reason))) => {
                assert!(reason.contains("backlog is full"), "{reason}");
                refused += 1;
            }
            Some(Ok(p)) => panic!("answered while Redis is paused: {p:?}"),
            None => accepted.push(append),
        }
    }
    assert!(refused > 0, "the bound refused some at once");
    let accepted_count = accepted.len() as u64;
    let mut offsets = Vec::new();
    for append in accepted {
        offsets.push(
            tokio::time::timeout(WAIT, append)
                .await
                .unwrap()
                .unwrap()
                .offset,
        );
    }
    assert_eq!(
        offsets,
        (1..=accepted_count).collect::<Vec<_>>(),
        "what was taken is applied, in order; what was refused took no offset"
    );
    assert_eq!(
        store.metric("realtime_history_errors_total{op=\"append\"}"),
        Some(refused as f64)
    );

    redis.kill().await;
    assert!(
        store
            .cluster
            .bus()
            .wait_for(BusLink::Publisher, false, WAIT)
            .await
    );
    let mut down = store.append("paused", window, origin, 301, "e1");
    assert!(
        matches!(
            (&mut down).now_or_never(),
            Some(Err(HistoryError::Unavailable(_)))
        ),
        "refused at once while the publisher link is down"
    );
    let read = store.history().read(ReadRequest {
        topic: Topic::parse("paused").unwrap(),
        limits: window,
        after: None,
        limit: 1,
        new_epoch: "e2".into(),
    });
    assert!(
        matches!(
            tokio::time::timeout(WAIT, read).await,
            Ok(Err(HistoryError::Unavailable(_)))
        ),
        "a read fails within its timeout"
    );
    assert_eq!(
        store.metric("realtime_history_errors_total{op=\"read\"}"),
        Some(1.0)
    );
}

/// What an inbox was handed: envelopes as their sequence number, and `Resumed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Envelope(u64),
    Resumed,
}

fn recording_inbox() -> (
    realtime::cluster::bus::Inbox,
    tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let inbox = Arc::new(move |event: BusEvent<'_>| {
        let _ = tx.send(match event {
            BusEvent::Envelope(bytes) => {
                Event::Envelope(u64::from_be_bytes(bytes.try_into().unwrap()))
            }
            BusEvent::Resumed => Event::Resumed,
            // Where it falls among the envelopes is not this test's concern.
            BusEvent::Resubscribed => return,
        });
    });
    (inbox, rx)
}

/// Publishes each number on `channel`; returns how many nodes received each.
async fn publish_numbers(
    url: &str,
    channel: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Vec<usize> {
    let mut pipe = redis::pipe();
    for n in numbers {
        pipe.cmd("PUBLISH")
            .arg(channel)
            .arg(n.to_be_bytes().as_slice());
    }
    pipe.query_async(&mut redis_connection(url).await)
        .await
        .unwrap()
}

/// As [`publish_numbers`], each received by the bus.
async fn publish_to_bus(url: &str, channel: &str, numbers: std::ops::RangeInclusive<u64>) {
    let receivers = publish_numbers(url, channel, numbers).await;
    assert!(receivers.iter().all(|n| *n == 1), "the bus is subscribed");
}

async fn next_events(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    until: Event,
) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{until:?} in time; saw {seen:?}"))
            .unwrap();
        seen.push(event);
        if event == until {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_sees_resumed_between_what_came_before_and_after_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    let (inbox, mut events) = recording_inbox();
    let store = Store::start_with(&redis.url(), "s", |_| {}, inbox).await;
    let channel = "s:resumed-probe";
    publish_to_bus(&redis.url(), channel, 1..=20).await;
    let before = next_events(&mut events, Event::Envelope(20)).await;
    assert_eq!(before, (1..=20).map(Event::Envelope).collect::<Vec<_>>());

    redis.kill().await;
    assert!(
        store
            .cluster
            .bus()
            .wait_for(BusLink::Subscriber, false, WAIT)
            .await
    );
    redis.restart().await;
    assert!(store.cluster.wait_until_up(WAIT).await);
    publish_to_bus(&redis.url(), channel, 21..=40).await;
    let after = next_events(&mut events, Event::Envelope(40)).await;
    let mut expected = vec![Event::Resumed];
    expected.extend((21..=40).map(Event::Envelope));
    assert_eq!(
        after, expected,
        "Resumed once, before anything after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_sees_resumed_after_the_envelopes_kept_when_it_fell_behind() {
    let redis = RedisServer::start().await;
    // The engine stand-in stalls until `open` is dropped.
    let (open, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let (record, mut events) = recording_inbox();
    let inbox = Arc::new(move |event: BusEvent<'_>| {
        let _ = gate.lock().unwrap().recv();
        record(event);
    });
    let store = Store::start_with(&redis.url(), "s", |c| c.inbox_capacity = 8, inbox).await;
    let channel = "s:resumed-probe";
    let _ = publish_numbers(&redis.url(), channel, 1..=200).await;
    assert!(
        store.cluster.bus().wait_until_down(WAIT).await,
        "the link is dropped once the backlog is full"
    );
    drop(open);
    assert!(store.cluster.wait_until_up(WAIT).await, "resubscribed");
    publish_to_bus(&redis.url(), channel, 201..=201).await;
    let seen = next_events(&mut events, Event::Envelope(201)).await;
    let resumed = seen
        .iter()
        .position(|e| *e == Event::Resumed)
        .expect("Resumed handed over");
    let kept = &seen[..resumed];
    assert!(!kept.is_empty());
    assert_eq!(
        kept,
        (1..=kept.len() as u64)
            .map(Event::Envelope)
            .collect::<Vec<_>>(),
        "what was kept comes first, in order"
    );
    assert_eq!(
        &seen[resumed..],
        &[Event::Resumed, Event::Envelope(201)],
        "then Resumed, then what came after"
    );
}

#[tokio::test]
async fn lua_wire_bytes_decode_as_wire_publications() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "w").await;
    let topic = "chat:lobby.a-b_c@d=e+f";
    let mut watcher = subscriber(&redis.url(), &store.channel(topic)).await;
    let payload = r#"{"type":"n","text":"a b\nc \"q\" ✓"}"#;
    let request = AppendRequest {
        topic: Topic::parse(topic).unwrap(),
        limits: limits(10, minute()),
        payload: payload.into(),
        channel: store.channel(topic),
        origin: NodeTag::from_random(11),
        seq: 1,
        new_epoch: "9f3a".into(),
    };
    assert_eq!(
        store.history().append(request).await.unwrap(),
        pos(1, "9f3a")
    );
    let msg = tokio::time::timeout(WAIT, watcher.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let bytes = msg.get_payload_bytes();
    assert_eq!(
        WirePublication::decode(bytes),
        Some(WirePublication {
            offset: 1,
            epoch: "9f3a",
            topic,
            payload: payload.as_bytes(),
        })
    );
    assert_eq!(
        bytes,
        WirePublication {
            offset: 1,
            epoch: "9f3a",
            topic,
            payload: payload.as_bytes(),
        }
        .encode()
        .as_slice(),
        "byte for byte what Rust encodes"
    );
    // An epoch no node could decode from the wire is refused, not published.
    let window = limits(10, minute());
    for epoch in ["", "two words"] {
        assert!(matches!(
            store
                .append(topic, window, NodeTag::from_random(11), 2, epoch)
                .await,
            Err(HistoryError::Unavailable(_))
        ));
    }
    let key = store.stream_key(topic);
    assert_eq!(redis_query::<u64>(&redis.url(), &["XLEN", &key]).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "f").await;
    let window = limits(10, minute());
    let origin = NodeTag::from_random(12);
    assert_eq!(
        store.append("kept", window, origin, 1, "e1").await.unwrap(),
        pos(1, "e1")
    );
    assert_eq!(
        store.read("kept", window, None, 10, "e2").await.state.top,
        1
    );
    let _: () = redis_query(&redis.url(), &["SCRIPT", "FLUSH"]).await;
    let append = tokio::time::timeout(WAIT, store.append("kept", window, origin, 2, "e1"))
        .await
        .expect("answered after the scripts are loaded again");
    assert_eq!(append.unwrap(), pos(2, "e1"));
    let _: () = redis_query(&redis.url(), &["SCRIPT", "FLUSH"]).await;
    let page = store.read("kept", window, None, 10, "e2").await;
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[tokio::test]
async fn an_append_is_taken_when_asked_even_if_its_answer_is_not_awaited() {
    let redis = RedisServer::start().await;
    let store = Store::start(&redis.url(), "d").await;
    let window = limits(10, minute());
    let origin = NodeTag::from_random(13);
    for seq in 1..=3 {
        drop(store.append("fire", window, origin, seq, "e1"));
    }
    // Applied in order before the next one, which is queued behind them.
    assert_eq!(
        store.append("fire", window, origin, 4, "e1").await.unwrap(),
        pos(4, "e1")
    );
    let page = store.read("fire", window, None, 10, "e2").await;
    let numbers: Vec<u64> = page
        .publications
        .iter()
        .map(|p| {
            serde_json::from_str::<Value>(&p.payload).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
}
