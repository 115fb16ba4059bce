//! An SSE stream's writer: takes frames from the connection's outbox, encodes up
//! to `write_batch` of them (with the heartbeat comment and, at the end, the
//! close event) into one chunk, and hands the chunk to the response body through
//! the pipe, as a poll function the session drives. Each frame is copied once,
//! into the chunk; only the frames that can move a history position are looked
//! into (see [`Positions`]).

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use bytes::BytesMut;
use realtime_core::CloseCode;

use super::event::{self, PING, Positions};
use super::pipe::{BodyGone, PipeSender};
use crate::outbox::{self, Outbox};

/// The write half of a stream's state: what it has taken from the outbox and not
/// yet handed to the body. A few words while idle.
#[derive(Debug, Default)]
pub(crate) struct EventWriter {
    batch: VecDeque<Utf8Bytes>,
    /// An encoded chunk waiting for the pipe's slot.
    chunk: Option<Bytes>,
    ping: bool,
    /// The close event to write once the batch is written.
    close: Option<CloseCode>,
    /// The stream's history topics, when it has any.
    positions: Option<Box<Positions>>,
}

impl EventWriter {
    pub(crate) fn new(positions: Option<Positions>) -> Self {
        EventWriter {
            positions: positions.map(Box::new),
            ..EventWriter::default()
        }
    }

    /// Writes the heartbeat comment with the next chunk.
    pub(crate) fn ping(&mut self) {
        self.ping = true;
    }

    /// Whether it holds work the body has not taken: a `Pending` from
    /// [`poll_write`](Self::poll_write) then means the client is not reading.
    pub(crate) fn is_busy(&self) -> bool {
        self.chunk.is_some() || self.has_output()
    }

    fn has_output(&self) -> bool {
        self.ping || self.close.is_some() || !self.batch.is_empty()
    }

    /// Hands at most one chunk to the pipe.
    ///
    /// `Ready(Ok(()))`: a chunk was handed over and more is waiting; the caller
    /// lets its other work have a turn before calling again. `Pending`: blocked on
    /// the pipe if [`is_busy`](Self::is_busy), else everything is handed over and
    /// the outbox is empty; either way a wake-up is registered.
    pub(crate) fn poll_write(
        &mut self,
        pipe: &PipeSender,
        outbox: &Outbox,
        per_chunk: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BodyGone>> {
        loop {
            if let Some(chunk) = self.chunk.take() {
                match pipe.poll_ready(cx) {
                    Poll::Pending => {
                        self.chunk = Some(chunk);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(gone)) => return Poll::Ready(Err(gone)),
                    Poll::Ready(Ok(())) => pipe.send(chunk),
                }
                if !self.has_output() {
                    outbox::recycle(&mut self.batch);
                    // Registers for the next push when there is none, so an idle
                    // stream costs no extra wake-up per delivery.
                    ready!(outbox.poll_take(cx, &mut self.batch));
                }
                return Poll::Ready(Ok(()));
            }
            if !self.has_output() {
                outbox::recycle(&mut self.batch);
                ready!(outbox.poll_take(cx, &mut self.batch));
            }
            self.chunk = Some(self.encode(per_chunk));
        }
    }

    /// Moves every frame still queued in `outbox` behind the batch, for the last
    /// writes of a stream that is closing.
    pub(crate) fn take_rest(&mut self, outbox: &Outbox) {
        let mut rest = VecDeque::new();
        if outbox.try_take(&mut rest) {
            self.batch.append(&mut rest);
        }
    }

    /// Drops every frame not handed over yet (a slow consumer's close).
    pub(crate) fn discard(&mut self) {
        self.batch = VecDeque::new();
        self.chunk = None;
        self.ping = false;
    }

    /// Writes the close event after what it holds.
    pub(crate) fn close(&mut self, code: CloseCode) {
        self.close = Some(code);
    }

    /// Hands over everything it holds (not taking from the outbox any more) and
    /// resolves once the body has taken the last chunk.
    pub(crate) fn poll_finish(
        &mut self,
        pipe: &PipeSender,
        per_chunk: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BodyGone>> {
        loop {
            ready!(pipe.poll_ready(cx))?;
            match self.chunk.take() {
                Some(chunk) => pipe.send(chunk),
                None if self.has_output() => self.chunk = Some(self.encode(per_chunk)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }

    /// The next chunk: the heartbeat if due, up to `per_chunk` frames, and the
    /// close event once no frame is left.
    fn encode(&mut self, per_chunk: usize) -> Bytes {
        let n = self.batch.len().min(per_chunk.max(1));
        let size = usize::from(self.ping) * PING.len()
            + self
                .batch
                .iter()
                .take(n)
                .map(|f| event::data_len(f))
                .sum::<usize>();
        let mut out = BytesMut::with_capacity(size);
        if std::mem::take(&mut self.ping) {
            out.extend_from_slice(PING);
        }
        for frame in self.batch.drain(..n) {
            if let Some(positions) = self.positions.as_deref_mut()
                && positions.advance(&frame)
            {
                positions.write_id(&mut out);
            }
            event::data(&mut out, &frame);
        }
        if self.batch.is_empty()
            && let Some(code) = self.close.take()
        {
            event::close(&mut out, code);
        }
        out.freeze()
    }
}
