//! Socket helpers shared by the library's integration tests: serving an engine
//! on a local port, the client socket type, the wait bound and reading the next
//! frame.
#![allow(dead_code)]

use std::time::Duration;

pub mod sse;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for anything a test awaits; never a schedule.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Serves `rt`'s WebSocket route at `/ws` and its SSE route at `/sse` on a free
/// local port; returns the address and the server task.
pub async fn serve(rt: &realtime::Realtime) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/ws", rt.websocket_route())
        .route("/sse", rt.sse_route());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server runs");
    });
    (addr, server)
}

/// The next message of any kind, bounded by [`WAIT`].
pub async fn next_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame within the wait bound")
        .expect("stream open")
        .expect("frame read")
}

/// The next JSON text frame, skipping pings and pongs.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match next_message(ws).await {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON text"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}
