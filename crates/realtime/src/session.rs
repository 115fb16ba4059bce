//! One task per WebSocket connection: it is the connection's only writer (draining
//! the bounded outbound queue in batches, one flush per batch), reads and answers
//! client commands, pings on an interval, and closes with the right code.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use realtime_core::{CloseCode, Identity, ServerFrame};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::commands;
use crate::handle::ConnectionHandle;
use crate::metrics::ErrorKind;
use crate::service::Realtime;

/// How the read/write loop ended.
enum Ending {
    /// Close the socket with this code (flushing queued frames first unless the
    /// connection is a slow consumer).
    Close(CloseCode),
    /// The peer is gone or the socket failed: nothing more can be written.
    Gone,
    /// The client sent a close frame; answer it and stop.
    ClientClosed,
}

/// Runs an accepted, authenticated connection until it closes.
pub(crate) async fn run(rt: Realtime, mut socket: WebSocket, identity: Identity) {
    let (handle, mut rx, ready) = rt.open_connection(identity, |info| {
        Some(
            ServerFrame::Welcome {
                connection_id: info.id,
                user_id: &info.user_id,
                roles: &info.roles,
                timestamp: &info.connected_at,
            }
            .to_json(),
        )
    });
    if let Some(ready) = ready {
        // In a cluster the welcome means "reachable from every node": wait (bounded)
        // until this node receives the user's and roles' channels. If the bus is
        // down the interest is re-applied when it returns; the client is served.
        match tokio::time::timeout(rt.config().close_timeout, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "connection accepted while the bus is down"),
            Err(_) => tracing::debug!("connection accepted before the bus confirmed its channels"),
        }
    }
    rt.activate(&handle);
    tracing::debug!(connection = %handle.id(), user = %handle.info().user_id, "connection opened");
    if !rt.is_accepting() {
        // The upgrade raced the start of a shutdown that has already notified everyone.
        handle.close(CloseCode::ServerShutdown);
    }

    let ending = serve(&rt, &handle, &mut socket, &mut rx).await;
    if let Ending::Close(code) = ending {
        handle.close(code);
    }
    // Unregister before the close handshake: from here on nothing is sent to this
    // connection, and counts no longer include it while its socket winds down.
    rt.connection_closed(&handle);
    let close_timeout = rt.config().close_timeout;
    match ending {
        Ending::Close(code) => {
            if code != CloseCode::SlowConsumer {
                // Frames queued before the close (e.g. `server-shutdown`) still go out.
                let _ =
                    tokio::time::timeout(close_timeout, write_queued(&mut socket, &mut rx)).await;
            }
            close_socket(&mut socket, code, close_timeout).await;
        }
        Ending::ClientClosed => {
            let _ = tokio::time::timeout(close_timeout, socket.flush()).await;
        }
        Ending::Gone => {}
    }
    tracing::debug!(connection = %handle.id(), code = ?handle.close_code(), "connection closed");
}

async fn serve(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    socket: &mut WebSocket,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
) -> Ending {
    let config = rt.config();
    let mut heartbeat = Heartbeat::new(config.ping_interval, config.pong_timeout);
    let timer = tokio::time::sleep_until(heartbeat.deadline());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = handle.closed() => {
                return Ending::Close(handle.close_code().unwrap_or(CloseCode::InternalError));
            }
            frame = rx.recv() => {
                // The handle holds the sender, so the queue cannot end while we run.
                let Some(frame) = frame else { return Ending::Close(CloseCode::InternalError) };
                let write = write_batch(socket, frame, rx, config.write_batch);
                tokio::pin!(write);
                let written = tokio::select! {
                    biased;
                    r = &mut write => r,
                    // A slow consumer's stalled write is abandoned at once; any other
                    // close lets the frames already taken from the queue go out first.
                    () = handle.closed() => match handle.close_code() {
                        Some(CloseCode::SlowConsumer) => continue,
                        _ => tokio::time::timeout(config.close_timeout, &mut write)
                            .await
                            .unwrap_or(Ok(())),
                    },
                };
                if written.is_err() {
                    rt.inner.metrics.error(ErrorKind::Socket);
                    return Ending::Gone;
                }
            }
            inbound = socket.recv() => {
                let reply = match inbound {
                    None => return Ending::Gone,
                    Some(Err(e)) => return read_error(rt, e),
                    Some(Ok(msg)) => {
                        if heartbeat.activity() {
                            timer.as_mut().reset(heartbeat.deadline());
                        }
                        match msg {
                            Message::Text(text) => commands::handle_text(rt, handle, &text).await,
                            Message::Binary(_) => commands::binary_frame_reply(rt),
                            Message::Ping(_) | Message::Pong(_) => continue,
                            Message::Close(_) => return Ending::ClientClosed,
                        }
                    }
                };
                handle.try_send(&Utf8Bytes::from(reply));
            }
            () = &mut timer => {
                match heartbeat.on_timer() {
                    Beat::SendPing => {
                        let sent = tokio::select! {
                            r = socket.send(Message::Ping(Default::default())) => r,
                            () = handle.closed() => continue,
                        };
                        if sent.is_err() {
                            return Ending::Gone;
                        }
                    }
                    Beat::Expired => return Ending::Close(CloseCode::NoPong),
                }
                timer.as_mut().reset(heartbeat.deadline());
            }
        }
    }
}

/// Writes `first` and whatever else is already queued (up to `batch` frames), then
/// flushes once: one syscall for many frames under load.
async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
    batch: usize,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..batch {
        match rx.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

/// Writes every frame still queued, then flushes.
async fn write_queued(
    socket: &mut WebSocket,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    while let Ok(frame) = rx.try_recv() {
        socket.feed(Message::Text(frame)).await?;
    }
    socket.flush().await
}

/// Sends the close frame and waits (bounded) for the client's answering close.
async fn close_socket(socket: &mut WebSocket, code: CloseCode, timeout: Duration) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    };
    let _ = tokio::time::timeout(timeout, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
}

fn read_error(rt: &Realtime, e: axum::Error) -> Ending {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Ending::Close(CloseCode::MessageTooBig),
        Some(tungstenite::Error::Utf8(_)) => {
            rt.inner.metrics.error(ErrorKind::Protocol);
            Ending::Gone
        }
        _ => {
            rt.inner.metrics.error(ErrorKind::Socket);
            Ending::Gone
        }
    }
}

enum Beat {
    SendPing,
    Expired,
}

/// Ping schedule: a ping every `interval`; if nothing at all arrives within
/// `timeout` of a ping, the client is considered gone.
struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    last_ping: Instant,
    awaiting: bool,
}

impl Heartbeat {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Heartbeat {
            interval,
            timeout,
            last_ping: Instant::now(),
            awaiting: false,
        }
    }

    fn deadline(&self) -> Instant {
        if self.awaiting {
            self.last_ping + self.timeout
        } else {
            self.last_ping + self.interval
        }
    }

    /// Records inbound traffic; returns whether the deadline moved.
    fn activity(&mut self) -> bool {
        std::mem::replace(&mut self.awaiting, false)
    }

    fn on_timer(&mut self) -> Beat {
        if self.awaiting {
            return Beat::Expired;
        }
        self.awaiting = true;
        self.last_ping = Instant::now();
        Beat::SendPing
    }
}
