//! One task per WebSocket connection: it is the connection's only writer (draining
//! the bounded outbound queue in batches, one flush per batch), reads and answers
//! client commands between write batches, pings on an interval, drops a peer whose
//! writes stay blocked, and closes with the right code.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use realtime_core::ratelimit::{Bucket, Verdict};
use realtime_core::{CloseCode, ServerFrame, Transport};
use tokio::time::Instant;

use crate::commands;
use crate::config::RealtimeConfig;
use crate::handle::ConnectionHandle;
use crate::heartbeat::{Beat, Heartbeat, rearm};
use crate::hooks::Admission;
use crate::metrics::ErrorKind;
use crate::opening;
use crate::service::Realtime;
use crate::writer::{Writer, write_queued};

/// How the read/write loop ended.
enum Ending {
    /// Close the socket with this code (flushing queued frames first unless the
    /// connection is a slow consumer).
    Close(CloseCode),
    /// The peer is gone or the socket failed: nothing more can be written.
    Gone,
    /// The client sent a close frame; answer it and stop.
    ClientClosed,
    /// A write stayed blocked past `write_timeout`: the peer stopped reading. It is
    /// a slow consumer (3008) whose socket is dropped, since a close frame could
    /// not get through either.
    Stalled,
}

/// What woke the session.
enum Wake {
    Closed,
    Inbound(Option<Result<Message, axum::Error>>),
    Timer,
    WriteFailed,
}

/// Opens an accepted, authenticated connection and returns the task that serves
/// it until it closes.
///
/// A plain function returning an `async move` block, not an `async fn`: an async
/// fn keeps its arguments and their moved copies side by side in the task, which
/// costs every idle connection a second copy of its socket.
pub(crate) fn run(
    rt: Realtime,
    mut socket: WebSocket,
    admission: Admission,
) -> impl Future<Output = ()> + Send + 'static {
    let Admission { identity, topics } = admission;
    let expires_at = identity.expires_at;
    let info = rt.new_connection(identity, Transport::Websocket);
    let opened = rt.open_connection(info, expires_at, |info| {
        Some(
            ServerFrame::Welcome {
                connection_id: info.id,
                user_id: &info.user_id,
                roles: &info.roles,
                timestamp: &info.connected_at,
                expires_at,
            }
            .to_json(),
        )
    });
    async move {
        let Ok((handle, ready)) = opened else {
            // Over the user's connection limit: told why, never registered.
            let timeout = rt.config().close_timeout;
            Box::pin(close_socket(
                &mut socket,
                CloseCode::ConnectionLimit,
                timeout,
            ))
            .await;
            return;
        };
        Box::pin(opening::start(&rt, &handle, ready)).await;
        // Server-side topics of the admission: subscribed as the HTTP API
        // subscribes, so the client is sent nothing for them (it learns of them
        // from its messages).
        Box::pin(opening::subscribe_server_side(&rt, &handle, topics)).await;

        let mut writer = Writer::default();
        let ending = serve(&rt, &handle, &mut socket, &mut writer).await;
        match ending {
            Ending::Close(code) => {
                handle.close(code);
            }
            Ending::Stalled => {
                // Counted with the other slow consumers (first code wins, as always).
                handle.close(CloseCode::SlowConsumer);
                tracing::debug!(connection = %handle.id(), "write timed out: the peer stopped reading");
            }
            Ending::Gone | Ending::ClientClosed => {}
        }
        // Unregister before the close handshake: from here on nothing is sent to this
        // connection, and counts no longer include it while its socket winds down.
        rt.connection_closed(&handle);
        // Boxed: the close handshake is cold and would otherwise size every task.
        let config = rt.config();
        Box::pin(finish(
            &mut socket,
            &handle,
            &mut writer.batch,
            ending,
            config,
        ))
        .await;
        tracing::debug!(connection = %handle.id(), code = ?handle.close_code(), "connection closed");
    }
}

/// Sends what is still queued (unless the client is a slow consumer or gone) and
/// completes the close handshake, each bounded by `close_timeout`.
async fn finish(
    socket: &mut WebSocket,
    handle: &ConnectionHandle,
    batch: &mut VecDeque<Utf8Bytes>,
    ending: Ending,
    config: &RealtimeConfig,
) {
    let close_timeout = config.close_timeout;
    match ending {
        Ending::Close(code) => {
            if code != CloseCode::SlowConsumer {
                // Frames queued before the close (e.g. `server-shutdown`) still go out.
                let write = write_queued(socket, handle.outbox(), batch, config.write_batch);
                let _ = tokio::time::timeout(close_timeout, write).await;
            }
            close_socket(socket, code, close_timeout).await;
        }
        Ending::ClientClosed => {
            let _ = tokio::time::timeout(close_timeout, socket.flush()).await;
        }
        Ending::Gone | Ending::Stalled => {}
    }
}

/// Serves the connection until it ends. Each wake-up polls, in this order, the
/// close signal, the writer (at most one chunk of `write_batch` frames), the
/// socket's next inbound frame and the one timer, so no outbound rate keeps the
/// connection from reading its client, running its heartbeat or expiring.
async fn serve(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    socket: &mut WebSocket,
    writer: &mut Writer,
) -> Ending {
    let config = rt.config();
    let mut heartbeat = Heartbeat::new(config);
    heartbeat.expire_at(handle.expires_at());
    let mut bucket = Bucket::new(&config.command_rate, seconds());
    let timer = tokio::time::sleep_until(heartbeat.deadline());
    tokio::pin!(timer);
    // One close signal future for the whole session: it registers with the handle
    // once instead of on every wake-up. Once it resolves the session ends, so it is
    // never polled again.
    let closed = handle.closed();
    tokio::pin!(closed);
    let close_ending = || Ending::Close(handle.close_code().unwrap_or(CloseCode::InternalError));
    loop {
        let wake = poll_fn(|cx| {
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Closed);
            }
            let more = match writer.poll_write(socket, handle.outbox(), config.write_batch, cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::WriteFailed),
                Poll::Pending => false,
            };
            heartbeat.after_write(more, writer.is_busy(), timer.as_mut());
            if let Poll::Ready(inbound) = socket.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Inbound(inbound));
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
            if more {
                // The next chunk after everyone else had a turn.
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Closed => return close_ending(),
            Wake::WriteFailed => {
                rt.inner.metrics.error(ErrorKind::Socket);
                return Ending::Gone;
            }
            Wake::Timer => {
                match heartbeat.on_timer() {
                    Beat::NotYet => {}
                    Beat::SendPing => writer.ping(),
                    Beat::Expired => return Ending::Close(CloseCode::NoPong),
                    Beat::TokenExpired => return Ending::Close(CloseCode::TokenExpired),
                    Beat::WriteStalled => return Ending::Stalled,
                }
                timer.as_mut().reset(heartbeat.deadline());
            }
            Wake::Inbound(inbound) => {
                let reply = match inbound {
                    None => return Ending::Gone,
                    Some(Err(e)) => return read_error(rt, e),
                    Some(Ok(msg)) => {
                        heartbeat.activity();
                        rearm(timer.as_mut(), heartbeat.deadline());
                        match msg {
                            Message::Ping(_) | Message::Pong(_) => continue,
                            Message::Close(_) => return Ending::ClientClosed,
                            // Text and binary frames are commands for the rate limit.
                            data => match bucket.check(&config.command_rate, seconds()) {
                                Verdict::Disconnect => {
                                    return Ending::Close(CloseCode::TooManyRequests);
                                }
                                Verdict::Refuse => {
                                    commands::rate_limited_reply(rt, data.to_text().unwrap_or(""))
                                }
                                Verdict::Allow => match data {
                                    // Boxed: command handling (cluster round trips
                                    // included) would otherwise size every idle
                                    // connection's task.
                                    Message::Text(text) => {
                                        let reply =
                                            Box::pin(commands::handle_text(rt, handle, &text))
                                                .await;
                                        // A `refresh` moves the expiry.
                                        if heartbeat.expire_at(handle.expires_at()) {
                                            rearm(timer.as_mut(), heartbeat.deadline());
                                        }
                                        match reply {
                                            Some(reply) => reply,
                                            // Queued by the command itself.
                                            None => continue,
                                        }
                                    }
                                    _ => commands::binary_frame_reply(rt),
                                },
                            },
                        }
                    }
                };
                handle.try_send(&Utf8Bytes::from(reply));
            }
        }
    }
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
            Ending::Close(CloseCode::InvalidPayload)
        }
        _ => {
            rt.inner.metrics.error(ErrorKind::Socket);
            Ending::Gone
        }
    }
}

/// Seconds since the first session started: the rate limiter's clock.
fn seconds() -> f64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64()
}
