//! The hand-off between an SSE stream's session task and its response body: a
//! single slot holding at most one chunk of encoded events. The session fills it
//! when it is empty; the body (polled by the HTTP server) empties it. A slot that
//! stays full means the server is not writing, because the client is not
//! reading, which is how the session sees a blocked write. The body's drop (the
//! server gave the response up: the client is gone) is seen by the session too.
//!
//! One allocation of a few words per stream, no buffer while idle: a channel
//! would keep a block of slots for every idle connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use axum::body::Bytes;
use futures_util::Stream;

/// The body was dropped: nothing written now reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyGone;

/// The error a given-up stream's body ends with, so the server closes the
/// connection instead of ending the response cleanly.
#[derive(Debug, thiserror::Error)]
#[error("the event stream was given up: the client is not reading")]
pub(crate) struct Aborted;

#[derive(Default)]
struct State {
    chunk: Option<Bytes>,
    /// The session has finished: once the slot is empty the body ends.
    ended: bool,
    /// The session gave up: the body ends with an error.
    aborted: bool,
    body_gone: bool,
    body: Option<Waker>,
    session: Option<Waker>,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // Plain data: a panic elsewhere cannot leave it inconsistent.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The session's end: it fills the slot.
pub(crate) struct PipeSender(Shared);

/// The body's end: the response body of the stream.
pub(crate) struct PipeBody(Shared);

/// A pipe whose slot starts with `first` (the stream's opening).
pub(crate) fn pipe(first: Option<Bytes>) -> (PipeSender, PipeBody) {
    let shared = Arc::new(Mutex::new(State {
        chunk: first,
        ..State::default()
    }));
    (PipeSender(shared.clone()), PipeBody(shared))
}

impl PipeSender {
    /// `Ready(Ok)` once the slot is empty (the body took the last chunk);
    /// `Ready(Err)` once the body is gone. Registers a wake-up otherwise.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), BodyGone>> {
        let mut state = lock(&self.0);
        if state.body_gone {
            return Poll::Ready(Err(BodyGone));
        }
        if state.chunk.is_none() {
            return Poll::Ready(Ok(()));
        }
        register(&mut state.session, cx);
        Poll::Pending
    }

    /// `Ready` once the body is gone. Registers a wake-up otherwise.
    pub(crate) fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.0);
        if state.body_gone {
            return Poll::Ready(());
        }
        register(&mut state.session, cx);
        Poll::Pending
    }

    /// Fills the slot, which [`poll_ready`](Self::poll_ready) found empty.
    pub(crate) fn send(&self, chunk: Bytes) {
        let waker = {
            let mut state = lock(&self.0);
            debug_assert!(state.chunk.is_none(), "the slot holds one chunk");
            state.chunk = Some(chunk);
            state.body.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Gives the stream up: the body drops what it holds and ends with an error.
    pub(crate) fn abort(&self) {
        let waker = {
            let mut state = lock(&self.0);
            state.aborted = true;
            state.chunk = None;
            state.body.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for PipeSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.ended = true;
            state.body.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Stream for PipeBody {
    type Item = Result<Bytes, Aborted>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (item, waker) = {
            let mut state = lock(&self.0);
            if state.aborted {
                (Some(Err(Aborted)), None)
            } else if let Some(chunk) = state.chunk.take() {
                (Some(Ok(chunk)), state.session.take())
            } else if state.ended {
                (None, None)
            } else {
                register(&mut state.body, cx);
                return Poll::Pending;
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Poll::Ready(item)
    }
}

impl Drop for PipeBody {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.body_gone = true;
            state.chunk = None;
            state.session.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn chunks_pass_one_at_a_time_then_the_body_ends() {
        let (sender, mut body) = pipe(Some(Bytes::from_static(b"first")));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(chunk) = body.next().await {
                got.push(chunk.unwrap());
            }
            got
        });
        for chunk in ["a", "b", "c"] {
            tokio::time::timeout(WAIT, poll_fn(|cx| sender.poll_ready(cx)))
                .await
                .expect("the body takes each chunk")
                .unwrap();
            sender.send(Bytes::from_static(chunk.as_bytes()));
        }
        drop(sender);
        let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        assert_eq!(got, ["first", "a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_full_slot_is_pending_and_a_dropped_body_is_seen() {
        let (sender, body) = pipe(Some(Bytes::from_static(b"unread")));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(sender.poll_ready(&mut cx), Poll::Pending, "not taken yet");
        assert_eq!(sender.poll_gone(&mut cx), Poll::Pending);
        drop(body);
        assert_eq!(sender.poll_ready(&mut cx), Poll::Ready(Err(BodyGone)));
        assert_eq!(sender.poll_gone(&mut cx), Poll::Ready(()));
    }

    #[tokio::test]
    async fn an_aborted_stream_ends_with_an_error() {
        let (sender, mut body) = pipe(Some(Bytes::from_static(b"unread")));
        sender.abort();
        assert!(matches!(body.next().await, Some(Err(Aborted))));
    }
}
