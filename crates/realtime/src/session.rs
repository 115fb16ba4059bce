//! One task per WebSocket connection: it is the connection's only writer (draining
//! the bounded outbound queue in batches, one flush per batch), reads and answers
//! client commands between write batches, pings on an interval, drops a peer whose
//! writes stay blocked, and closes with the right code.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use realtime_core::ratelimit::{Bucket, Verdict};
use realtime_core::{CloseCode, ServerFrame};
use tokio::time::{Instant, Sleep};

use crate::commands;
use crate::config::RealtimeConfig;
use crate::handle::ConnectionHandle;
use crate::hooks::Admission;
use crate::metrics::ErrorKind;
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
    // Server-side topics of the admission are subscribed as the connection opens
    // (wired with the SSE transport).
    let Admission { identity, .. } = admission;
    let expires_at = identity.expires_at;
    let opened = rt.open_connection(identity, |info| {
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
        if let Some(ready) = ready {
            // In a cluster the welcome means "reachable from every node": wait (bounded)
            // until this node receives the user's and roles' channels. If the bus is
            // down the interest is re-applied when it returns; the client is served.
            match Box::pin(tokio::time::timeout(rt.config().close_timeout, ready)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "connection accepted while the bus is down")
                }
                Err(_) => {
                    tracing::debug!("connection accepted before the bus confirmed its channels")
                }
            }
        }
        rt.activate(&handle);
        tracing::debug!(connection = %handle.id(), user = %handle.info().user_id, "connection opened");
        if !rt.is_accepting() {
            // The upgrade raced the start of a shutdown that has already notified everyone.
            handle.close(CloseCode::ServerShutdown);
        }

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
            if more || !writer.is_busy() {
                heartbeat.write_moved();
            } else if heartbeat.write_blocked() {
                rearm(timer.as_mut(), heartbeat.deadline());
            }
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

/// Moves the timer to `at` if that is earlier than where it is set. A later
/// deadline needs no reset (a timer operation): the timer fires early, finds
/// nothing due and is set then.
fn rearm(timer: Pin<&mut Sleep>, at: Instant) {
    if at < timer.deadline() {
        timer.reset(at);
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

enum Beat {
    /// The timer fired for a deadline that has since moved: nothing is due.
    NotYet,
    SendPing,
    Expired,
    TokenExpired,
    WriteStalled,
}

/// The session's deadlines, served by its one timer: a ping every
/// `ping_interval`, and if nothing at all arrives within `pong_timeout` of a ping
/// the client is considered gone; the token's expiry; and how long the current
/// write may stay blocked (`write_timeout`). It borrows the durations from the
/// config rather than copying them into every idle connection's task.
struct Heartbeat<'a> {
    config: &'a RealtimeConfig,
    last_ping: Instant,
    awaiting: bool,
    /// The token's `exp` the expiry below was computed from.
    expires_at: Option<i64>,
    /// When the connection is closed with 3005 unless refreshed.
    expiry: Option<Instant>,
    /// When the write that is blocked now must have made progress by.
    write_deadline: Option<Instant>,
}

impl<'a> Heartbeat<'a> {
    fn new(config: &'a RealtimeConfig) -> Self {
        Heartbeat {
            config,
            last_ping: Instant::now(),
            awaiting: false,
            expires_at: None,
            expiry: None,
            write_deadline: None,
        }
    }

    /// Sets the token expiry (Unix seconds; the connection closes at it plus
    /// `expiry_grace`); returns whether it changed.
    fn expire_at(&mut self, expires_at: Option<i64>) -> bool {
        let grace = self.config.expiry_grace;
        if expires_at == self.expires_at {
            return false;
        }
        self.expires_at = expires_at;
        self.expiry = expires_at.and_then(|exp| {
            let at =
                UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(exp).unwrap_or(0)))?;
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now().checked_add(left.checked_add(grace)?)
        });
        true
    }

    /// The earliest deadline.
    fn deadline(&self) -> Instant {
        let mut at = self.beat();
        for other in [self.expiry, self.write_deadline].into_iter().flatten() {
            at = at.min(other);
        }
        at
    }

    /// When the next ping is due, or the pong to the last one is overdue.
    fn beat(&self) -> Instant {
        if self.awaiting {
            self.last_ping + self.config.pong_timeout
        } else {
            self.last_ping + self.config.ping_interval
        }
    }

    /// Records inbound traffic.
    fn activity(&mut self) {
        self.awaiting = false;
    }

    /// Records that a write is blocked; returns whether that started its clock
    /// (the deadline may have moved earlier). Reads the clock only then.
    fn write_blocked(&mut self) -> bool {
        if self.write_deadline.is_some() {
            return false;
        }
        self.write_deadline = Instant::now().checked_add(self.config.write_timeout);
        self.write_deadline.is_some()
    }

    /// Records that the writer is not blocked (it wrote a chunk, or is idle).
    fn write_moved(&mut self) {
        self.write_deadline = None;
    }

    fn on_timer(&mut self) -> Beat {
        let now = Instant::now();
        if self.expiry.is_some_and(|e| now >= e) {
            return Beat::TokenExpired;
        }
        if self.write_deadline.is_some_and(|d| now >= d) {
            return Beat::WriteStalled;
        }
        if now < self.beat() {
            return Beat::NotYet;
        }
        if self.awaiting {
            return Beat::Expired;
        }
        self.awaiting = true;
        self.last_ping = now;
        Beat::SendPing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> i64 {
        crate::auth::unix_seconds(SystemTime::now())
    }

    fn config(grace: u64) -> RealtimeConfig {
        RealtimeConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            expiry_grace: Duration::from_secs(grace),
            ..RealtimeConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_expiry_shares_the_ping_timer() {
        let config = config(2);
        let mut beat = Heartbeat::new(&config);
        assert!(!beat.expire_at(None), "no expiry, no change");
        let ping_at = beat.deadline();
        // Expiring long after the next ping: the ping comes first.
        assert!(beat.expire_at(Some(unix_now() + 3600)));
        assert_eq!(beat.deadline(), ping_at);
        // Expiring before it: the timer fires at the expiry, plus the grace.
        assert!(beat.expire_at(Some(unix_now() + 5)));
        assert!(!beat.expire_at(beat.expires_at));
        let expiry = beat.deadline();
        assert!(expiry < ping_at);
        let left = expiry - Instant::now();
        assert!(
            left > Duration::from_secs(5) && left <= Duration::from_secs(7),
            "{left:?}"
        );
        tokio::time::advance(left).await;
        assert!(matches!(beat.on_timer(), Beat::TokenExpired));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_moves_the_deadline_back_to_the_ping() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        let ping_at = beat.deadline();
        beat.expire_at(Some(unix_now() + 1));
        assert!(beat.deadline() < ping_at);
        assert!(beat.expire_at(Some(unix_now() + 3600)));
        assert_eq!(beat.deadline(), ping_at);
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(matches!(beat.on_timer(), Beat::SendPing));
    }

    #[tokio::test(start_paused = true)]
    async fn an_already_expired_token_expires_at_once() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        beat.expire_at(Some(unix_now() - 10));
        assert!(matches!(beat.on_timer(), Beat::TokenExpired));
        // Absurd expiries neither overflow nor expire.
        let far_config = RealtimeConfig {
            expiry_grace: Duration::MAX,
            ..config
        };
        let mut far = Heartbeat::new(&far_config);
        far.expire_at(Some(i64::MAX - 1));
        assert!(matches!(far.on_timer(), Beat::NotYet));
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(matches!(far.on_timer(), Beat::SendPing));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_shares_the_timer_and_stalls_after_the_write_timeout() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        let ping_at = beat.deadline();
        assert!(beat.write_blocked(), "the first block starts the clock");
        assert!(!beat.write_blocked(), "still the same blocked write");
        let stall_at = beat.deadline();
        assert_eq!(stall_at - Instant::now(), config.write_timeout);
        // Progress clears it; a timer set for it finds nothing due.
        beat.write_moved();
        assert_eq!(beat.deadline(), ping_at);
        tokio::time::advance(config.write_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::NotYet));
        assert!(beat.write_blocked());
        tokio::time::advance(config.write_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::WriteStalled));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fires_early_only_reports_what_is_due() {
        let config = config(0);
        let mut beat = Heartbeat::new(&config);
        tokio::time::advance(config.ping_interval).await;
        assert!(matches!(beat.on_timer(), Beat::SendPing));
        // Set for the pong deadline, the timer fires after a pong moved it to the
        // next ping: nothing is due yet.
        beat.activity();
        tokio::time::advance(config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::NotYet));
        tokio::time::advance(config.ping_interval - config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::SendPing));
        tokio::time::advance(config.pong_timeout).await;
        assert!(matches!(beat.on_timer(), Beat::Expired));
    }
}
