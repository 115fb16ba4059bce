//! A connection's writer: moves frames from its outbox to its socket in chunks of
//! `write_batch` frames with one flush each, as a poll function the session drives
//! between reads, so a busy or blocked write never keeps the socket from being read.

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;

use crate::outbox::{self, Outbox};

/// The write half of a session's state: what it has taken from the outbox and not
/// yet flushed. A few words, held in the session task itself.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// Frames taken from the outbox and not yet handed to the socket.
    pub(crate) batch: VecDeque<Utf8Bytes>,
    /// Frames handed to the socket since its last flush.
    unflushed: usize,
    /// A heartbeat ping waits to go out, ahead of the frames still in the batch.
    ping: bool,
}

impl Writer {
    /// Sends a WebSocket ping with the next chunk.
    pub(crate) fn ping(&mut self) {
        self.ping = true;
    }

    /// Whether it holds work the socket has not taken yet: a `Pending` from
    /// [`poll_write`](Self::poll_write) then means the peer is not reading.
    pub(crate) fn is_busy(&self) -> bool {
        self.ping || self.unflushed > 0 || !self.batch.is_empty()
    }

    /// Writes at most one chunk (`per_flush` frames, then a flush).
    ///
    /// `Ready(Ok(()))`: a chunk went out and more is waiting; the caller lets its
    /// other work (reading, timers) have a turn before calling again. `Pending`:
    /// blocked on the socket if [`is_busy`](Self::is_busy), else everything is
    /// written and the outbox is empty; either way a wake-up is registered.
    pub(crate) fn poll_write(
        &mut self,
        socket: &mut WebSocket,
        outbox: &Outbox,
        per_flush: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), axum::Error>> {
        loop {
            if self.ping || (!self.batch.is_empty() && self.unflushed < per_flush.max(1)) {
                ready!(socket.poll_ready_unpin(cx))?;
                let frame = if std::mem::take(&mut self.ping) {
                    Message::Ping(Default::default())
                } else {
                    match self.batch.pop_front() {
                        Some(text) => Message::Text(text),
                        None => continue,
                    }
                };
                socket.start_send_unpin(frame)?;
                self.unflushed += 1;
                continue;
            }
            if self.unflushed > 0 {
                ready!(socket.poll_flush_unpin(cx))?;
                self.unflushed = 0;
                if self.batch.is_empty() {
                    outbox::recycle(&mut self.batch);
                    // Registers for the next push when there is none, so an idle
                    // connection costs no extra wake-up per delivery.
                    ready!(outbox.poll_take(cx, &mut self.batch));
                }
                return Poll::Ready(Ok(()));
            }
            ready!(outbox.poll_take(cx, &mut self.batch));
        }
    }
}

/// Writes a batch taken from the queue, flushing after every `per_flush` frames
/// and at the end (which also sends what an interrupted chunk left buffered).
pub(crate) async fn write_batch(
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
pub(crate) async fn write_queued(
    socket: &mut WebSocket,
    outbox: &Outbox,
    batch: &mut VecDeque<Utf8Bytes>,
    per_flush: usize,
) -> Result<(), axum::Error> {
    write_batch(socket, batch, per_flush).await?;
    if outbox.try_take(batch) {
        write_batch(socket, batch, per_flush).await?;
    }
    Ok(())
}
