//! The inbound hand-off: a queue bounded in envelopes and bytes between the
//! subscriber link, which drains the Redis client as fast as it reads, and one
//! task that hands each envelope, and each [`BusEvent::Resumed`] the link marks
//! between two connections, to the engine's inbox, in arrival order.

use std::sync::Arc;

use realtime::cluster::bus::{BusEvent, Inbox};
use redis::Msg;
use tokio::sync::{Notify, mpsc};

use crate::metrics::Flow;

/// The backlog is at its bound: the envelope was not queued.
#[derive(Debug)]
pub(crate) struct Full;

/// What waits for the inbox.
enum Arrival {
    Message(Msg),
    /// The link was re-established: what was published meanwhile did not arrive.
    Resumed,
    /// The re-established link subscribed every channel again.
    Resubscribed,
}

pub(crate) struct Inbound {
    queue: mpsc::UnboundedSender<Arrival>,
    flow: Flow,
    capacity: usize,
    bytes: usize,
    drained: Arc<Notify>,
}

impl Inbound {
    /// Spawns the delivery task on `runtime`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        inbox: Inbox,
        flow: Flow,
        capacity: usize,
        bytes: usize,
    ) -> Inbound {
        let (queue, mut pending) = mpsc::unbounded_channel::<Arrival>();
        let drained = Arc::new(Notify::new());
        let (delivered, idle) = (flow.clone(), drained.clone());
        runtime.spawn(async move {
            while let Some(arrival) = pending.recv().await {
                let msg = match arrival {
                    Arrival::Message(msg) => msg,
                    Arrival::Resumed => {
                        inbox(BusEvent::Resumed);
                        continue;
                    }
                    Arrival::Resubscribed => {
                        inbox(BusEvent::Resubscribed);
                        continue;
                    }
                };
                let payload = msg.get_payload_bytes();
                // Counted as handed over before the hand-over, so whoever the inbox
                // tells about the envelope already sees it counted.
                delivered.passed(payload.len());
                if delivered.backlog_envelopes.get() == 0 {
                    idle.notify_waiters();
                }
                inbox(BusEvent::Envelope(payload));
            }
        });
        Inbound {
            queue,
            flow,
            capacity: capacity.max(1),
            bytes,
            drained,
        }
    }

    /// Queues an envelope for the inbox, unless that would take the backlog past
    /// its bounds. An empty backlog takes any envelope, so one larger than the byte
    /// bound is still delivered.
    pub(crate) fn push(&self, msg: Msg) -> Result<(), Full> {
        let size = msg.get_payload_bytes().len();
        let waiting = self.flow.backlog_envelopes.get().max(0) as usize;
        let waiting_bytes = self.flow.backlog_bytes.get().max(0) as usize;
        if waiting > 0 && (waiting >= self.capacity || waiting_bytes + size > self.bytes) {
            return Err(Full);
        }
        self.flow.queued(size);
        // The delivery task lives as long as the runtime; after that nothing is read.
        let _ = self.queue.send(Arrival::Message(msg));
        Ok(())
    }

    /// Marks a new connection: the inbox gets [`BusEvent::Resumed`] after every
    /// envelope queued so far and before any queued later. Never refused (it
    /// carries nothing) and not counted as an envelope.
    pub(crate) fn resumed(&self) {
        let _ = self.queue.send(Arrival::Resumed);
    }

    /// Marks the end of a new connection's SUBSCRIBEs: the inbox gets
    /// [`BusEvent::Resubscribed`] in arrival order, like [`resumed`](Self::resumed).
    pub(crate) fn resubscribed(&self) {
        let _ = self.queue.send(Arrival::Resubscribed);
    }

    /// Resolves once everything queued so far has been handed to the inbox (the
    /// last one may still be in the inbox's hands).
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.flow.backlog_envelopes.get() <= 0 {
                return;
            }
            notified.await;
        }
    }
}
