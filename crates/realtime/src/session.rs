//! One task per WebSocket connection: it is the connection's only writer (draining
//! the bounded outbound queue in batches, one flush per batch), reads and answers
//! client commands, pings on an interval, and closes with the right code.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use realtime_core::ratelimit::{Bucket, Verdict};
use realtime_core::{CloseCode, Identity, ServerFrame};
use tokio::time::Instant;

use crate::commands;
use crate::config::RealtimeConfig;
use crate::handle::ConnectionHandle;
use crate::metrics::ErrorKind;
use crate::outbox;
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

/// Opens an accepted, authenticated connection and returns the task that serves
/// it until it closes.
///
/// A plain function returning an `async move` block, not an `async fn`: an async
/// fn keeps its arguments and their moved copies side by side in the task, which
/// costs every idle connection a second copy of its socket.
pub(crate) fn run(
    rt: Realtime,
    mut socket: WebSocket,
    identity: Identity,
) -> impl Future<Output = ()> + Send + 'static {
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

        let mut batch = VecDeque::new();
        let ending = serve(&rt, &handle, &mut socket, &mut batch).await;
        if let Ending::Close(code) = ending {
            handle.close(code);
        }
        // Unregister before the close handshake: from here on nothing is sent to this
        // connection, and counts no longer include it while its socket winds down.
        rt.connection_closed(&handle);
        // Boxed: the close handshake is cold and would otherwise size every task.
        let config = rt.config();
        Box::pin(finish(&mut socket, &handle, &mut batch, ending, config)).await;
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
                let write = write_queued(socket, handle, batch, config.write_batch);
                let _ = tokio::time::timeout(close_timeout, write).await;
            }
            close_socket(socket, code, close_timeout).await;
        }
        Ending::ClientClosed => {
            let _ = tokio::time::timeout(close_timeout, socket.flush()).await;
        }
        Ending::Gone => {}
    }
}

async fn serve(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    socket: &mut WebSocket,
    batch: &mut VecDeque<Utf8Bytes>,
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
        // Biased: the close signal first, then queued frames, then the socket; no
        // random branch order to compute on every wake-up.
        tokio::select! {
            biased;
            () = &mut closed => return close_ending(),
            () = handle.outbox().take(batch) => {
                let write = write_batch(socket, batch, config.write_batch);
                tokio::pin!(write);
                let written = tokio::select! {
                    biased;
                    r = &mut write => r,
                    // A slow consumer's stalled write is abandoned at once; any other
                    // close lets the frames already taken from the queue go out first.
                    () = &mut closed => {
                        if handle.close_code() != Some(CloseCode::SlowConsumer) {
                            let _ = Box::pin(tokio::time::timeout(config.close_timeout, &mut write)).await;
                        }
                        return close_ending();
                    }
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
                            Message::Ping(_) | Message::Pong(_) => continue,
                            Message::Close(_) => return Ending::ClientClosed,
                            // Text and binary frames are commands for the rate limit.
                            data => match bucket.check(&config.command_rate, seconds()) {
                                Verdict::Disconnect => return Ending::Close(CloseCode::TooManyRequests),
                                Verdict::Refuse => {
                                    commands::rate_limited_reply(rt, data.to_text().unwrap_or(""))
                                }
                                Verdict::Allow => match data {
                                    // Boxed: command handling (cluster round trips
                                    // included) would otherwise size every idle
                                    // connection's task.
                                    Message::Text(text) => {
                                        let reply = Box::pin(commands::handle_text(rt, handle, &text)).await;
                                        // A `refresh` moves the expiry.
                                        if heartbeat.expire_at(handle.expires_at()) {
                                            timer.as_mut().reset(heartbeat.deadline());
                                        }
                                        reply
                                    }
                                    _ => commands::binary_frame_reply(rt),
                                },
                            },
                        }
                    }
                };
                handle.try_send(&Utf8Bytes::from(reply));
            }
            () = &mut timer => {
                match heartbeat.on_timer() {
                    Beat::SendPing => {
                        let sent = tokio::select! {
                            biased;
                            () = &mut closed => return close_ending(),
                            r = socket.send(Message::Ping(Default::default())) => r,
                        };
                        if sent.is_err() {
                            return Ending::Gone;
                        }
                    }
                    Beat::Expired => return Ending::Close(CloseCode::NoPong),
                    Beat::TokenExpired => return Ending::Close(CloseCode::TokenExpired),
                }
                timer.as_mut().reset(heartbeat.deadline());
            }
        }
    }
}

/// Writes a batch taken from the queue, flushing after every `per_flush` frames
/// and at the end: one syscall for many frames under load.
async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Utf8Bytes>,
    per_flush: usize,
) -> Result<(), axum::Error> {
    let mut unflushed = 0;
    while let Some(frame) = batch.pop_front() {
        socket.feed(Message::Text(frame)).await?;
        unflushed += 1;
        if unflushed == per_flush.max(1) {
            socket.flush().await?;
            unflushed = 0;
        }
    }
    outbox::recycle(batch);
    socket.flush().await
}

/// Writes what the interrupted batch still holds and every frame still queued.
async fn write_queued(
    socket: &mut WebSocket,
    handle: &ConnectionHandle,
    batch: &mut VecDeque<Utf8Bytes>,
    per_flush: usize,
) -> Result<(), axum::Error> {
    write_batch(socket, batch, per_flush).await?;
    if handle.outbox().try_take(batch) {
        write_batch(socket, batch, per_flush).await?;
    }
    Ok(())
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
    SendPing,
    Expired,
    TokenExpired,
}

/// Ping schedule: a ping every `ping_interval`; if nothing at all arrives within
/// `pong_timeout` of a ping, the client is considered gone. It also holds the
/// token's expiry, so one timer serves both. It borrows the durations from the
/// config rather than copying them into every idle connection's task.
struct Heartbeat<'a> {
    config: &'a RealtimeConfig,
    last_ping: Instant,
    awaiting: bool,
    /// The token's `exp` the expiry below was computed from.
    expires_at: Option<i64>,
    /// When the connection is closed with 3005 unless refreshed.
    expiry: Option<Instant>,
}

impl<'a> Heartbeat<'a> {
    fn new(config: &'a RealtimeConfig) -> Self {
        Heartbeat {
            config,
            last_ping: Instant::now(),
            awaiting: false,
            expires_at: None,
            expiry: None,
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

    fn deadline(&self) -> Instant {
        let beat = if self.awaiting {
            self.last_ping + self.config.pong_timeout
        } else {
            self.last_ping + self.config.ping_interval
        };
        match self.expiry {
            Some(expiry) if expiry < beat => expiry,
            _ => beat,
        }
    }

    /// Records inbound traffic; returns whether the deadline moved.
    fn activity(&mut self) -> bool {
        std::mem::replace(&mut self.awaiting, false)
    }

    fn on_timer(&mut self) -> Beat {
        if self.expiry.is_some_and(|e| Instant::now() >= e) {
            return Beat::TokenExpired;
        }
        if self.awaiting {
            return Beat::Expired;
        }
        self.awaiting = true;
        self.last_ping = Instant::now();
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
        assert!(matches!(far.on_timer(), Beat::SendPing));
    }
}
