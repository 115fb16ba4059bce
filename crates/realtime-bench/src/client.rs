//! One generator WebSocket connection: open it from a chosen 127.0.0.x source
//! address, speak the server's handshake (our welcome and subscribe, nothing for the
//! ceiling, Engine.IO/Socket.IO for the peer), then receive and account for every
//! delivery until told to stop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::servers::Kind;
use crate::tracker::Tracker;

/// An open generator connection.
pub type Socket = WebSocketStream<TcpStream>;

/// How many 127.0.0.x source addresses connections are spread over, so the
/// ephemeral port range (about 28,000 per source address) never limits a run.
pub const SOURCE_ADDRESSES: u8 = 16;

/// Upper bound for one handshake (TCP, upgrade, welcome, subscribe).
pub const HANDSHAKE: Duration = Duration::from_secs(30);

/// What to open.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    pub kind: Kind,
    pub server: SocketAddr,
    /// Index of the connection, used to pick its source address.
    pub index: usize,
    /// Our server only: the JWT to authenticate with.
    pub token: Option<String>,
    /// Topic to subscribe to (a room for Socket.IO; ignored by the ceiling).
    pub topic: Option<String>,
    /// A small socket receive buffer, for a client that stops reading: the server
    /// then sees it fall behind in seconds rather than after filling megabytes of
    /// kernel buffers (as a slow mobile client would).
    pub recv_buffer: Option<u32>,
}

/// The source address of connection `index`: 127.0.0.2 ... 127.0.0.(1 + N).
pub fn source_address(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (index % SOURCE_ADDRESSES as usize) as u8,
    ))
}

/// Opens a connection and completes the server's handshake. Returns once the
/// connection would receive a message published now.
pub async fn open(spec: &ConnSpec) -> anyhow::Result<Socket> {
    tokio::time::timeout(HANDSHAKE, open_inner(spec))
        .await
        .context("handshake timed out")?
}

async fn open_inner(spec: &ConnSpec) -> anyhow::Result<Socket> {
    let mut ws = connect(spec).await?;
    match spec.kind {
        Kind::Realtime => {
            if let Some(topic) = &spec.topic {
                let command = format!(r#"{{"action":"subscribe","topic":"{topic}","ref":"s"}}"#);
                ws.send(Message::text(command)).await?;
                expect_text(&mut ws, |t| t.contains("\"subscribed\"")).await?;
            }
        }
        Kind::Ceiling => {}
        Kind::SocketIo => {
            expect_text(&mut ws, |t| t.starts_with('0')).await?;
            ws.send(Message::text("40")).await?;
            expect_text(&mut ws, |t| t.starts_with("40")).await?;
        }
    }
    Ok(ws)
}

/// Opens the TCP connection and upgrades it; for our server, also waits for the
/// welcome frame (the connection is then registered and may send commands).
pub async fn connect(spec: &ConnSpec) -> anyhow::Result<Socket> {
    Ok(connect_welcomed(spec).await?.0)
}

/// [`connect`], also returning our server's welcome frame (empty for the others).
pub async fn connect_welcomed(spec: &ConnSpec) -> anyhow::Result<(Socket, String)> {
    let stream = tcp(spec).await?;
    let url = match (spec.kind, &spec.topic) {
        (Kind::SocketIo, Some(room)) => format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&room={room}",
            spec.server
        ),
        (Kind::SocketIo, None) => {
            format!("ws://{}/socket.io/?EIO=4&transport=websocket", spec.server)
        }
        _ => format!("ws://{}/ws", spec.server),
    };
    let mut request = url.into_client_request()?;
    if let Some(token) = &spec.token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(request, stream, Some(config))
        .await
        .context("upgrade")?;
    let welcome = match spec.kind {
        Kind::Realtime => expect_text(&mut ws, |t| t.contains("\"welcome\"")).await?,
        _ => String::new(),
    };
    Ok((ws, welcome))
}

/// The TCP connection of `spec`, from its source address, with its receive
/// buffer and no Nagle delay: what every transport's client starts from.
pub async fn tcp(spec: &ConnSpec) -> anyhow::Result<TcpStream> {
    let tcp = TcpSocket::new_v4()?;
    tcp.bind(SocketAddr::new(source_address(spec.index), 0))?;
    if let Some(size) = spec.recv_buffer {
        tcp.set_recv_buffer_size(size)?;
    }
    let stream = tcp.connect(spec.server).await.context("connect")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads until a text frame that `accept` takes, and returns it; an error frame
/// or a close fails.
async fn expect_text(ws: &mut Socket, accept: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(text) if accept(&text) => return Ok(text.as_str().to_owned()),
            Message::Text(text) if text.contains("\"error\"") => bail!("server error: {text}"),
            Message::Close(frame) => bail!("closed during handshake: {frame:?}"),
            _ => {}
        }
    }
    bail!("connection ended during handshake")
}

/// Counters every receiving connection adds to, read while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Deliveries received by reading connections.
    pub delivered: AtomicU64,
}

/// Receives until `stop` turns true or the server closes the connection, feeding
/// `tracker`. A `stalled` connection reads nothing until `stop`, then drains what
/// the server still sends (bounded) to learn whether it was closed.
pub async fn receive(
    mut ws: Socket,
    kind: Kind,
    mut tracker: Tracker,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
    stalled: bool,
) -> Tracker {
    if stalled {
        let _ = stop.wait_for(|s| *s).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        tracker.closed(frame.map_or(1005, |f| f.code.into()));
                        break;
                    }
                    Some(Ok(Message::Text(text))) => {
                        tracker.record(&text, false);
                    }
                    Some(Ok(_)) => {}
                    // Dropped without a close frame: a server cannot send one to a
                    // client whose socket buffers are full.
                    Some(Err(_)) | None => {
                        tracker.closed(1006);
                        break;
                    }
                }
            }
        })
        .await;
        return tracker;
    }
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                if kind == Kind::SocketIo && text.as_str() == "2" {
                    // Engine.IO ping: answer with a pong or the peer drops us.
                    let _ = ws.send(Message::Text(Utf8Bytes::from_static("3"))).await;
                    continue;
                }
                if tracker.record(&text, true) {
                    live.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                tracker.closed(frame.map_or(1005, |f| f.code.into()));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                tracker.closed(1006);
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    tracker
}
