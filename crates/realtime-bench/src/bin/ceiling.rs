//! `realtime-ceiling`: the benchmark's ceiling, the least a fan-out server built on
//! axum's WebSocket support can do. No auth, no routing, no protocol: every
//! connection gets every message posted to `POST /publish`, written from one shared
//! buffer by the connection's own task with one flush per batch. Bench-only.
//!
//! It uses the same knobs our engine uses (4 KiB read buffer, 8 KiB write buffer,
//! bounded per-connection queue, batched writes) so the ratio compares engines, not
//! settings. Prints `listening <addr>` on stdout once it accepts connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clients::Clients;
use futures_util::SinkExt;
use tokio::sync::mpsc;

const QUEUE: usize = 1024;
const WRITE_BATCH: usize = 64;

mod clients {
    //! The connection list: a mutex-guarded slab of queue senders with a free list,
    //! each tagged with a unique id so a reused slot is never cleared by its previous
    //! owner.
    use std::sync::Mutex;

    use axum::extract::ws::Utf8Bytes;
    use tokio::sync::mpsc;

    type Slot = Option<(u64, mpsc::Sender<Utf8Bytes>)>;

    #[derive(Default)]
    struct Slots {
        last_id: u64,
        slots: Vec<Slot>,
        /// Indexes of empty slots, so adding a connection is O(1).
        free: Vec<usize>,
    }

    #[derive(Default)]
    pub struct Clients {
        inner: Mutex<Slots>,
    }

    impl Clients {
        /// Registers a queue; returns its (slot, id) for [`Clients::remove`].
        pub fn add(&self, tx: mpsc::Sender<Utf8Bytes>) -> (usize, u64) {
            let mut guard = self.inner.lock().unwrap();
            let s = &mut *guard;
            s.last_id += 1;
            let id = s.last_id;
            let slot = match s.free.pop() {
                Some(i) => i,
                None => {
                    s.slots.push(None);
                    s.slots.len() - 1
                }
            };
            s.slots[slot] = Some((id, tx));
            (slot, id)
        }

        pub fn remove(&self, (slot, id): (usize, u64)) {
            let mut guard = self.inner.lock().unwrap();
            let s = &mut *guard;
            match s.slots[slot] {
                Some((owner, _)) if owner == id => {
                    s.slots[slot] = None;
                    s.free.push(slot);
                }
                // Already dropped by `send_all` (and freed there), or reused.
                _ => {}
            }
        }

        /// Queues `frame` to everyone; a full queue drops the connection's sender,
        /// which ends its session (the ceiling's slow-consumer rule).
        pub fn send_all(&self, frame: &Utf8Bytes) -> usize {
            let mut guard = self.inner.lock().unwrap();
            let s = &mut *guard;
            let mut sent = 0;
            for (i, slot) in s.slots.iter_mut().enumerate() {
                if let Some((_, tx)) = slot {
                    if tx.try_send(frame.clone()).is_ok() {
                        sent += 1;
                    } else {
                        *slot = None;
                        s.free.push(i);
                    }
                }
            }
            sent
        }
    }
}

#[derive(Default)]
struct Shared {
    clients: Clients,
    published: AtomicU64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("CEILING_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let shared = Arc::new(Shared::default());
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/publish", post(publish))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening {}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

async fn upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| session(shared, socket))
}

async fn publish(State(shared): State<Arc<Shared>>, body: Bytes) -> impl IntoResponse {
    let Ok(frame) = Utf8Bytes::try_from(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "body must be UTF-8").into_response();
    };
    shared.published.fetch_add(1, Ordering::Relaxed);
    let delivered = shared.clients.send_all(&frame);
    format!("{{\"delivered\":{delivered}}}").into_response()
}

async fn session(shared: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let slot = shared.clients.add(tx);
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if write_batch(&mut socket, frame, &mut rx).await.is_err() {
                    break;
                }
            }
            inbound = socket.recv() => match inbound {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.clients.remove(slot);
}

async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..WRITE_BATCH {
        match rx.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}
