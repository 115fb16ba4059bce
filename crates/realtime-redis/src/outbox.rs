//! The outbox: the one ordered queue of everything this node sends through the
//! publisher link (bus publishes, history appends and resets), bounded in items
//! and bytes, so one node's appends and publishes reach Redis in the order asked.

use std::sync::{Arc, Mutex};

use realtime::HistoryError;
use realtime::realtime_core::Position;
use tokio::sync::{mpsc, oneshot, watch};

use crate::RedisConfig;
use crate::history::script::ScriptCall;
use crate::metrics::Flow;

/// One thing for the publisher to send.
pub(crate) enum Outgoing {
    /// An envelope for a channel, and where to report how many nodes received it.
    Publish {
        channel: String,
        envelope: Vec<u8>,
        counted: Option<oneshot::Sender<usize>>,
    },
    /// A history script that answers a position (append, reset).
    History {
        call: ScriptCall,
        done: oneshot::Sender<Result<Position, HistoryError>>,
    },
}

impl Outgoing {
    /// What the item weighs against the byte bound.
    pub(crate) fn size(&self) -> usize {
        match self {
            Outgoing::Publish { envelope, .. } => envelope.len(),
            Outgoing::History { call, .. } => call.size(),
        }
    }
}

/// Why an item was not queued.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) &'static str);

/// The sending side of the queue, shared by the bus and the history store.
pub(crate) struct Outbox {
    sender: mpsc::Sender<Outgoing>,
    max_bytes: usize,
    flow: Flow,
    /// Items ever queued; held while queueing, so the count matches the order.
    queued: Mutex<u64>,
    /// Items ever handed to Redis, in queue order (for `flush`).
    published: Arc<watch::Sender<u64>>,
}

impl Outbox {
    pub(crate) fn new(config: &RedisConfig, flow: Flow) -> (Outbox, mpsc::Receiver<Outgoing>) {
        let (sender, receiver) = mpsc::channel(config.outbox_capacity.max(1));
        let outbox = Outbox {
            sender,
            max_bytes: config.outbox_bytes,
            flow,
            queued: Mutex::new(0),
            published: Arc::new(watch::Sender::new(0)),
        };
        (outbox, receiver)
    }

    /// Where the publisher counts what it handed to Redis.
    pub(crate) fn published(&self) -> Arc<watch::Sender<u64>> {
        self.published.clone()
    }

    /// Queues an item, or refuses it at once when the queue is at its bound in
    /// items or bytes. An empty queue takes any item.
    pub(crate) fn enqueue(&self, item: Outgoing) -> Result<(), Refused> {
        let size = item.size();
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = self.flow.backlog_bytes.get().max(0) as usize;
        if waiting > 0 && waiting + size > self.max_bytes {
            return Err(Refused("redis publisher backlog is full (bytes)"));
        }
        // Counted before it is visible to the publisher, which uncounts it.
        self.flow.queued(size);
        match self.sender.try_send(item) {
            Ok(()) => {
                *queued += 1;
                Ok(())
            }
            Err(e) => {
                self.flow.backlog_envelopes.dec();
                self.flow.backlog_bytes.dec_by(size as i64);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => {
                        Refused("redis publisher backlog is full")
                    }
                    mpsc::error::TrySendError::Closed(_) => Refused("redis publisher stopped"),
                })
            }
        }
    }

    /// Resolves once everything queued before the call was handed to Redis; fails
    /// if the publisher stopped first.
    pub(crate) fn flush(&self) -> impl Future<Output = Result<(), ()>> + Send + 'static {
        let target = *self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut published = self.published.subscribe();
        async move {
            published
                .wait_for(|n| *n >= target)
                .await
                .map(|_| ())
                .map_err(|_| ())
        }
    }
}
