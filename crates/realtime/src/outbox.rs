//! A connection's outbound queue: frames waiting for the connection's writer,
//! bounded in messages and in bytes, holding no allocation while empty.
//!
//! Senders push under a short, almost always uncontended lock and wake the
//! writer only when the queue goes from empty to non-empty. The writer takes
//! everything queued in one swap, so a burst costs one wake-up and one lock per
//! batch, not per frame. An idle connection keeps no buffer: a queue grown by a
//! burst is released once the writer has drained it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;

/// Capacity the writer's spare buffer may keep between batches (frames).
const KEEP_CAPACITY: usize = 64;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds its maximum number of frames or bytes.
    Full,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<Queue>,
    writer: AtomicWaker,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Utf8Bytes>,
    bytes: usize,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes. A single frame
    /// larger than `max_bytes` is still accepted into an empty queue, so a large
    /// message never blocks a connection that is keeping up.
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(Queue::default()),
            writer: AtomicWaker::new(),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Most frames it holds.
    pub(crate) fn max_frames(&self) -> usize {
        self.max_frames
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame (a reference-counted clone: no copy of the bytes).
    pub(crate) fn push(&self, frame: &Utf8Bytes) -> Result<(), Refused> {
        let was_empty = {
            let mut q = self.lock();
            let was_empty = q.frames.is_empty();
            if !was_empty
                && (q.frames.len() >= self.max_frames || q.bytes + frame.len() > self.max_bytes)
            {
                return Err(Refused::Full);
            }
            q.bytes += frame.len();
            q.frames.push_back(frame.clone());
            was_empty
        };
        if was_empty {
            self.writer.wake();
        }
        Ok(())
    }

    /// Moves every queued frame into `batch` (which the caller has emptied) and
    /// returns whether there were any. The queue keeps `batch`'s old buffer, so
    /// swapping back and forth allocates nothing in steady state.
    pub(crate) fn try_take(&self, batch: &mut VecDeque<Utf8Bytes>) -> bool {
        debug_assert!(batch.is_empty());
        let mut q = self.lock();
        if q.frames.is_empty() {
            // Nothing queued: release a buffer grown by an earlier burst.
            if q.frames.capacity() > KEEP_CAPACITY {
                q.frames = VecDeque::new();
            }
            return false;
        }
        std::mem::swap(&mut q.frames, batch);
        q.bytes = 0;
        true
    }

    /// Like [`take`](Self::take), as a poll function for the connection's writer.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Utf8Bytes>,
    ) -> Poll<()> {
        if self.try_take(batch) {
            return Poll::Ready(());
        }
        self.writer.register(cx.waker());
        // A push between the first check and the registration woke nobody: look again.
        if self.try_take(batch) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until frames are queued, then moves them all into `batch`. Only the
    /// connection's one writer may call this.
    pub(crate) async fn take(&self, batch: &mut VecDeque<Utf8Bytes>) {
        poll_fn(|cx| self.poll_take(cx, batch)).await;
    }

    /// Frames and bytes waiting.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let q = self.lock();
        (q.frames.len(), q.bytes)
    }
}

/// Empties a drained batch buffer, releasing it if a burst grew it.
pub(crate) fn recycle(batch: &mut VecDeque<Utf8Bytes>) {
    batch.clear();
    if batch.capacity() > KEEP_CAPACITY {
        *batch = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Utf8Bytes {
        Utf8Bytes::from_static(text)
    }

    #[test]
    fn bounds_frames_and_bytes_but_always_takes_one_frame() {
        let outbox = Outbox::new(3, 10);
        assert_eq!(
            outbox.push(&frame("0123456789ab")),
            Ok(()),
            "oversized first frame"
        );
        assert_eq!(outbox.push(&frame("x")), Err(Refused::Full), "byte bound");
        let mut batch = VecDeque::new();
        assert!(outbox.try_take(&mut batch));
        assert_eq!(batch.len(), 1);
        recycle(&mut batch);
        for _ in 0..3 {
            assert_eq!(outbox.push(&frame("ab")), Ok(()));
        }
        assert_eq!(outbox.len(), (3, 6));
        assert_eq!(outbox.push(&frame("c")), Err(Refused::Full), "frame bound");
        assert!(outbox.try_take(&mut batch));
        assert_eq!(batch.len(), 3);
        assert_eq!(outbox.len(), (0, 0));
        assert!(!outbox.try_take(&mut VecDeque::new()));
    }

    #[tokio::test]
    async fn take_waits_for_a_push_from_another_task() {
        let outbox = std::sync::Arc::new(Outbox::new(8, 1024));
        let pusher = outbox.clone();
        let push = tokio::spawn(async move {
            tokio::task::yield_now().await;
            pusher.push(&frame("late")).unwrap();
        });
        let mut batch = VecDeque::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), outbox.take(&mut batch))
            .await
            .expect("the push wakes the writer");
        assert_eq!(batch.pop_front().as_deref(), Some("late"));
        push.await.unwrap();
    }

    #[test]
    fn an_idle_queue_releases_a_buffer_grown_by_a_burst() {
        let outbox = Outbox::new(1000, 1 << 20);
        for _ in 0..500 {
            outbox.push(&frame("burst")).unwrap();
        }
        let mut batch = VecDeque::new();
        assert!(outbox.try_take(&mut batch));
        // The queue now holds the (empty) buffer the batch came in; it is small.
        recycle(&mut batch);
        assert_eq!(
            batch.capacity(),
            0,
            "a burst-sized batch buffer is released"
        );
    }
}
