//! One task per SSE stream: it subscribes the stream's topics (with recovery on
//! history topics), then is the stream's only writer (outbox → events → the
//! response body), sends the heartbeat comment, closes at token expiry, drops a
//! client whose writes stay blocked, and ends the stream with a `close` event.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::Utf8Bytes;
use realtime_core::{
    CloseCode, ErrorCode, HistoryLimits, Position, ProtocolError, ServerFrame, Topic,
};
use tokio_util::sync::CancellationToken;

use super::event::Positions;
use super::pipe::PipeSender;
use super::writer::EventWriter;
use crate::cluster::bus::BusFuture;
use crate::handle::ConnectionHandle;
use crate::heartbeat::{Beat, Heartbeat};
use crate::history::engine::HistorySubscribeError;
use crate::opening;
use crate::service::Realtime;

/// One topic the stream subscribes to as it opens.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) topic: Topic,
    /// On a history topic: its limits and where the client resumes from.
    pub(crate) history: Option<(HistoryLimits, Option<Position>)>,
}

/// How the stream's loop ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// End the stream with a `close` event for this code (after the queued
    /// frames unless the client is a slow consumer).
    Close(CloseCode),
    /// The body was dropped: the client is gone.
    Gone,
    /// A write stayed blocked past `write_timeout`: a slow consumer (3008)
    /// whose stream is given up.
    Stalled,
}

enum Wake {
    Closed,
    Gone,
    Timer,
}

/// The task that serves an opened stream until it ends. A plain function
/// returning an `async move` block, as the WebSocket session is, so the task
/// holds one copy of its state.
pub(crate) fn run(
    rt: Realtime,
    handle: Arc<ConnectionHandle>,
    ready: Option<BusFuture>,
    subscriptions: Vec<Subscription>,
    pipe: PipeSender,
    abort: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let history: Vec<(Topic, Option<Position>)> = subscriptions
        .iter()
        .filter_map(|s| {
            let (_, since) = s.history.as_ref()?;
            // An unreadable id's stand-in has no epoch: no position the client holds.
            let since = since.clone().filter(|p| !p.epoch.is_empty());
            Some((s.topic.clone(), since))
        })
        .collect();
    let positions = (!history.is_empty()).then(|| Positions::new(history));
    async move {
        Box::pin(opening::start(&rt, &handle, ready)).await;
        Box::pin(subscribe(&rt, &handle, subscriptions)).await;
        // A queue that overflowed while the stream opened (a replay larger than
        // the queue) was not the client's doing, and holds, in order, the start
        // of what it is owed: it goes out before the 3008, so each reconnect
        // resumes further on instead of starting over (an SSE client cannot page
        // through `history` as a WebSocket can).
        let owed = handle.close_code() == Some(CloseCode::SlowConsumer);
        let mut writer = EventWriter::new(positions);
        let ending = serve(&rt, &handle, &mut writer, &pipe).await;
        match ending {
            Ending::Close(code) => {
                handle.close(code);
            }
            Ending::Stalled => {
                handle.close(CloseCode::SlowConsumer);
                tracing::debug!(connection = %handle.id(), "event stream write timed out: the client stopped reading");
            }
            Ending::Gone => {}
        }
        // Unregistered first: nothing is sent to it from here on.
        rt.connection_closed(&handle);
        if !Box::pin(finish(&rt, &handle, &mut writer, &pipe, ending, owed)).await {
            // The body may never be polled again (the server is blocked writing to
            // a client that does not read): it ends with an error when it is, and
            // the server that owns the connection closes it now.
            pipe.abort();
            abort.cancel();
        }
        drop(pipe);
        tracing::debug!(connection = %handle.id(), code = ?handle.close_code(), "event stream closed");
    }
}

/// Subscribes the stream's topics in order, each announced with a `subscribed`
/// frame (on a history topic the one a WebSocket `subscribe` gets, with the
/// replay when it resumes). A history topic whose store cannot be read is
/// announced with the `error` frame a WebSocket `subscribe` would get.
async fn subscribe(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    subscriptions: Vec<Subscription>,
) {
    for Subscription { topic, history } in subscriptions {
        if handle.is_closing() {
            return;
        }
        match history {
            Some((limits, since)) => {
                match rt
                    .subscribe_history(handle, &topic, limits, since.as_ref(), Some(None))
                    .await
                {
                    Ok(_) => {}
                    Err(HistorySubscribeError::Gone) => return,
                    Err(HistorySubscribeError::Store(e)) => {
                        let error = ProtocolError::new(
                            None,
                            ErrorCode::HistoryUnavailable,
                            format!("{}: {e}", topic.as_str()),
                        );
                        handle.try_send(&Utf8Bytes::from(error.frame().to_json()));
                    }
                }
            }
            None => {
                if rt.subscribe_channel(handle, &topic).await.is_err() {
                    return;
                }
                let frame = ServerFrame::Subscribed {
                    topic: topic.as_str(),
                    reference: None,
                    offset: None,
                    epoch: None,
                    recovered: None,
                    reason: None,
                };
                handle.try_send(&Utf8Bytes::from(frame.to_json()));
            }
        }
    }
}

/// Serves the stream until it ends. Each wake-up polls, in this order, the close
/// signal, the writer (at most one chunk), whether the body is gone, and the one
/// timer.
async fn serve(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    writer: &mut EventWriter,
    pipe: &PipeSender,
) -> Ending {
    let config = rt.config();
    let mut heartbeat = Heartbeat::one_way(config);
    heartbeat.expire_at(handle.expires_at());
    let timer = tokio::time::sleep_until(heartbeat.deadline());
    tokio::pin!(timer);
    let closed = handle.closed();
    tokio::pin!(closed);
    loop {
        let wake = poll_fn(|cx| {
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Closed);
            }
            let more = match writer.poll_write(pipe, handle.outbox(), config.write_batch, cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::Gone),
                Poll::Pending => false,
            };
            heartbeat.after_write(more, writer.is_busy(), timer.as_mut());
            if pipe.poll_gone(cx).is_ready() {
                return Poll::Ready(Wake::Gone);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
            if more {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Closed => {
                return Ending::Close(handle.close_code().unwrap_or(CloseCode::InternalError));
            }
            Wake::Gone => return Ending::Gone,
            Wake::Timer => {
                match heartbeat.on_timer() {
                    Beat::NotYet => {}
                    Beat::SendPing => writer.ping(),
                    // A one-way heartbeat expects no answer.
                    Beat::Expired => return Ending::Close(CloseCode::NoPong),
                    Beat::TokenExpired => return Ending::Close(CloseCode::TokenExpired),
                    Beat::WriteStalled => return Ending::Stalled,
                }
                timer.as_mut().reset(heartbeat.deadline());
            }
        }
    }
}

/// Writes what the stream still owes its client, bounded by `close_timeout`:
/// the frames queued before the close (unless it is a slow consumer's that
/// overflowed while streaming; `owed`: it overflowed while opening), then the
/// `close` event. Returns false when the stream must be given up instead (its
/// writes stalled, or these did not get through in time).
async fn finish(
    rt: &Realtime,
    handle: &ConnectionHandle,
    writer: &mut EventWriter,
    pipe: &PipeSender,
    ending: Ending,
    owed: bool,
) -> bool {
    let code = match ending {
        Ending::Close(code) => code,
        // Nothing reaches a client that is gone.
        Ending::Gone => return true,
        Ending::Stalled => return false,
    };
    let config = rt.config();
    if code == CloseCode::SlowConsumer && !owed {
        writer.discard();
    } else {
        // Frames queued before the close (e.g. `server-shutdown`) still go out.
        writer.take_rest(handle.outbox());
    }
    writer.close(code);
    let written = tokio::time::timeout(
        config.close_timeout,
        poll_fn(|cx| writer.poll_finish(pipe, config.write_batch, cx)),
    )
    .await;
    matches!(written, Ok(Ok(())))
}
