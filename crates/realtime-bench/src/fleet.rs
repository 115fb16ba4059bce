//! Many generator connections at once, over WebSocket or SSE: open them with
//! bounded concurrency, start a receiver on each, and collect their trackers
//! when the run stops.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use realtime_core::Transport;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{self, ConnSpec, Live, Socket};
use crate::servers::Kind;
use crate::sse::{self, SseStream};
use crate::tracker::Tracker;

/// Socket receive buffer of a subscriber that stops reading, in bytes.
const STALLED_RECV_BUFFER: u32 = 4096;

/// Handshakes in flight at once while opening.
pub const CONNECT_CONCURRENCY: usize = 128;

/// A connection to open: its spec, over which transport, the topic index it
/// tracks and whether it stalls.
#[derive(Debug, Clone)]
pub struct Member {
    pub spec: ConnSpec,
    /// `Sse` opens `GET /sse` (our server only).
    pub transport: Transport,
    pub topic: usize,
    pub stalled: bool,
}

/// A connection whose handshake completed.
enum Opened {
    Ws(Socket),
    Sse(SseStream),
}

/// Open connections, each with its receiver task.
pub struct Fleet {
    pub live: Arc<Live>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Tracker>>,
    /// Connections that could not be opened, with the first error seen.
    pub failed: usize,
    pub first_error: Option<String>,
    /// Time spent opening every connection.
    pub open_elapsed: Duration,
}

impl Fleet {
    /// Opens every member (up to [`CONNECT_CONCURRENCY`] handshakes at once) and
    /// starts its receiver. `on_open` is called after each handshake.
    pub async fn open(members: Vec<Member>, on_open: impl Fn()) -> Fleet {
        let live = Arc::new(Live::default());
        let (stop, stop_rx) = watch::channel(false);
        let start = Instant::now();
        let mut opened = futures_util::stream::iter(members)
            .map(|m| async move {
                let result = match m.transport {
                    Transport::Websocket => client::open(&m.spec).await.map(Opened::Ws),
                    Transport::Sse => sse::open(&m.spec).await.map(Opened::Sse),
                };
                (m, result)
            })
            .buffer_unordered(CONNECT_CONCURRENCY);
        let mut fleet = Fleet {
            live,
            stop,
            tasks: Vec::new(),
            failed: 0,
            first_error: None,
            open_elapsed: Duration::ZERO,
        };
        while let Some((member, result)) = opened.next().await {
            on_open();
            match result {
                Ok(Opened::Ws(ws)) => {
                    let task = client::receive(
                        ws,
                        member.spec.kind,
                        Tracker::new(member.topic),
                        fleet.live.clone(),
                        stop_rx.clone(),
                        member.stalled,
                    );
                    fleet.tasks.push(tokio::spawn(task));
                }
                Ok(Opened::Sse(stream)) => {
                    let task = sse::receive(
                        stream,
                        Tracker::new(member.topic),
                        fleet.live.clone(),
                        stop_rx.clone(),
                        member.stalled,
                    );
                    fleet.tasks.push(tokio::spawn(task));
                }
                Err(e) => {
                    fleet.failed += 1;
                    fleet.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        fleet.open_elapsed = start.elapsed();
        fleet
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops every receiver, closes the connections and returns the trackers.
    pub async fn finish(self) -> Vec<Tracker> {
        let _ = self.stop.send(true);
        let mut trackers = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            if let Ok(tracker) = task.await {
                trackers.push(tracker);
            }
        }
        trackers
    }
}

/// The members of a subscriber fleet: subscriber `i` connects to node
/// `i % nodes.len()` over `transport`, subscribes to topic `i % topics.len()`,
/// and the first `stalled` subscribers never read.
pub fn subscribers(
    kind: Kind,
    transport: Transport,
    nodes: &[std::net::SocketAddr],
    topics: &[String],
    count: usize,
    stalled: usize,
) -> Vec<Member> {
    let tokens = match kind {
        Kind::Realtime => crate::tokens::mint(count),
        _ => Vec::new(),
    };
    (0..count)
        .map(|i| {
            let topic = i % topics.len().max(1);
            Member {
                spec: ConnSpec {
                    kind,
                    server: nodes[i % nodes.len()],
                    index: i,
                    token: tokens.get(i).cloned(),
                    // Socket.IO fan-out to everyone needs no room.
                    topic: (kind != Kind::SocketIo || topics.len() > 1)
                        .then(|| topics.get(topic).cloned())
                        .flatten(),
                    recv_buffer: (i < stalled).then_some(STALLED_RECV_BUFFER),
                },
                transport,
                topic,
                stalled: i < stalled,
            }
        })
        .collect()
}
