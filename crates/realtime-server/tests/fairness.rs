//! A connection stays served whatever its outbound rate: a subscriber receiving a
//! continuous stream still gets its commands answered, runs its heartbeat (its
//! client's pongs are read) and is closed at token expiry; and a peer that stops
//! reading while the server writes to it is dropped after the write timeout,
//! though its queue never overflowed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use realtime::realtime_core::PreparedMessage;
use realtime::realtime_core::RateLimit;
use realtime::{Realtime, RealtimeConfig, Route};
use realtime_server::{Options, Server};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for a `pong` reply, however busy the connection is.
const PONG_BOUND: Duration = Duration::from_secs(1);

/// An in-process server whose engine settings the test adjusts beyond what
/// [`Options`] expose.
struct Node {
    addr: SocketAddr,
    rt: Realtime,
    task: JoinHandle<bool>,
}

impl Node {
    async fn start(options: Options, engine: impl FnOnce(&mut RealtimeConfig)) -> Node {
        let mut settings = options
            .resolve(|| "generated-0123456789".into())
            .expect("valid settings");
        engine(&mut settings.engine);
        let server = Server::bind(settings).await.expect("server binds");
        let addr = server.local_addr();
        let rt = server.realtime.clone();
        let task = tokio::spawn(server.serve(std::future::pending()));
        Node { addr, rt, task }
    }

    fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    async fn metrics_text(&self) -> String {
        let url = format!("http://{}/metrics", self.addr);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_subscriber_is_answered_pinged_and_expired() {
    /// Ticks the publisher may be ahead of what the client has read: far more
    /// than the socket buffers hold, so the connection's queue is never empty
    /// (a continuous stream), and well under the queue bound, so it never
    /// overflows however the machine schedules the two.
    const WINDOW: u64 = 4096;
    /// Bytes of padding per tick.
    const TICK: usize = 4096;
    let node = Node::start(
        Options {
            ping_interval: Some(Duration::from_millis(250)),
            pong_timeout: Some(Duration::from_millis(750)),
            jwt_leeway: Some(0),
            outbound_queue: Some(4 * WINDOW as usize),
            outbound_queue_bytes: Some(4 * WINDOW as usize * 2 * TICK),
            ..options()
        },
        // A ping command after every pong is more than the default command rate.
        |engine| engine.command_rate = RateLimit::OFF,
    )
    .await;
    // Expires in two to three seconds (`exp` is whole seconds): after several
    // pings, long after a missed pong would have closed it.
    let mut short = claims("streamer", &[]);
    short["exp"] = json!(now() + 3);
    // A small receive buffer keeps what the kernel holds for the client small, so
    // the window of ticks ahead is mostly in the server's queue.
    let (mut ws, _) = connect_small(&node, &sign_hs256(&short, SECRET), 64 * 1024).await;
    ws.send(Message::Text(
        json!({"action": "subscribe", "topic": "stream", "ref": "s"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let reply = next_text(&mut ws).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    let (read_tx, mut read_rx) = watch::channel(0u64);
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let rt = node.rt.clone();
        let done = done.clone();
        // Prepared once and delivered in-process: the publisher outpaces any
        // socket, so the stream never pauses.
        let topic = Route::Topic(rt.parse_topic("stream").unwrap());
        let tick = PreparedMessage::new(
            json!({"type": "tick", "pad": "x".repeat(TICK)}),
            "2026-01-01T00:00:00.000Z",
            None,
        )
        .unwrap();
        tokio::spawn(async move {
            let mut published = 0u64;
            while !done.load(Ordering::Relaxed) {
                if published - *read_rx.borrow() >= WINDOW {
                    let ahead = |read: &u64| published - *read < WINDOW;
                    if read_rx.wait_for(ahead).await.is_err() {
                        break;
                    }
                }
                if rt.deliver(&topic, tick.clone()) == 0 {
                    break; // the subscriber is gone
                }
                published += 1;
                if published.is_multiple_of(256) {
                    tokio::task::yield_now().await;
                }
            }
            published
        })
    };

    let mut ticks = 0u64;
    let mut pings_seen = 0u32;
    let mut pongs = 0u32;
    let mut slowest = Duration::ZERO;
    let mut pong_due = tokio::time::Instant::now() + PONG_BOUND;
    send(&mut ws, json!({"action": "ping", "ref": pongs})).await;
    let close = loop {
        let next = tokio::time::timeout_at(pong_due, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no pong within {PONG_BOUND:?} (after {pongs} pongs and {ticks} ticks)")
            })
            .expect("the stream stays open until the close frame")
            .expect("frame read");
        match next {
            // Ticks are told apart by size alone, so the client reads fast and
            // its pongs are not late for want of parsing.
            Message::Text(text) if text.len() > TICK => {
                ticks += 1;
                read_tx.send_replace(ticks);
            }
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    frame,
                    json!({"type": "pong", "ref": pongs}),
                    "unexpected frame"
                );
                slowest = slowest.max(PONG_BOUND - (pong_due - tokio::time::Instant::now()));
                pongs += 1;
                pong_due = tokio::time::Instant::now() + PONG_BOUND;
                send(&mut ws, json!({"action": "ping", "ref": pongs})).await;
            }
            // tungstenite answers it with a pong the server must read.
            Message::Ping(_) => pings_seen += 1,
            Message::Close(frame) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    done.store(true, Ordering::Relaxed);
    drop(read_tx);
    let published = publisher.await.unwrap();

    eprintln!(
        "{ticks} of {published} ticks read, {pongs} pongs (slowest {slowest:?}), {pings_seen} server pings"
    );
    let close = close.expect("a close frame with a code");
    assert_eq!(
        u16::from(close.code),
        3005,
        "closed at token expiry, not for a missed pong: {close:?}"
    );
    assert!(pongs >= 2, "answered {pongs} pings while streaming");
    assert!(
        pings_seen >= 2,
        "the heartbeat ran: {pings_seen} server pings"
    );
    assert!(
        ticks >= WINDOW,
        "a continuous stream: read {ticks} of {published} ticks"
    );
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains("realtime_disconnects_total{reason=\"token_expired\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("realtime_disconnects_total{reason=\"no_pong\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
    const FRAMES: usize = 1024;
    const PAD: usize = 16 * 1024;
    let node = Node::start(
        Options {
            // Far more than is ever published: the queue cannot overflow.
            outbound_queue: Some(16 * FRAMES),
            outbound_queue_bytes: Some(1 << 30),
            ..options()
        },
        |engine| engine.write_timeout = Duration::from_millis(500),
    )
    .await;
    // A client with a small receive buffer that, after its welcome, never reads.
    let (mut ws, welcome) = connect_small(&node, &token("stalled", &[]), 4096).await;
    let id = welcome["connection_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(node.rt.subscribe(id, "feed").await, Ok(true));

    // 16 MiB: far more than the kernel buffers between the two, so the server's
    // write blocks.
    let pad = "x".repeat(PAD);
    for seq in 0..FRAMES {
        let delivery = node
            .rt
            .publish("feed", json!({"type": "tick", "seq": seq, "pad": pad}))
            .unwrap();
        if delivery.local == 0 {
            // Already closed (on a slow machine publishing can outlast the write
            // timeout): never for overflow, the queue holds 64 times all of it.
            break;
        }
    }

    let mut count = node.rt.watch_connection_count();
    tokio::time::timeout(WAIT, count.wait_for(|c| *c == 0))
        .await
        .expect("the stalled connection is closed after the write timeout")
        .unwrap();
    // The socket was dropped, not held for a close handshake: what the client
    // finally reads is ticks, then the end of the stream, and no close frame.
    let mut read = 0usize;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => read += 1,
                Some(Ok(Message::Close(frame))) => panic!("a close frame after {read}: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket is closed (read {read} frames)");
    assert!(read < FRAMES, "it stopped short of the stream: {read}");
    // Read after the socket closed, which follows the accounting.
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains("realtime_disconnects_total{reason=\"slow_consumer\"} 1"),
        "counted as a slow consumer (3008):\n{metrics}"
    );
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket client whose socket has a `recv_buffer`-byte receive buffer;
/// returned with its welcome.
async fn connect_small(node: &Node, token: &str, recv_buffer: u32) -> (Ws, Value) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(node.ws_url(token), stream),
    )
    .await
    .expect("handshake in time")
    .expect("handshake accepted");
    let welcome = next_text(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next text frame, as JSON.
async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("frame read");
        match next {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}
