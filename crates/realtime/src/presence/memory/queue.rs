//! The in-memory webhook event queue: events waiting, events claimed by the node
//! delivering them, the bound and the drop count; and the [`EventQueue`] view one
//! node drains.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use realtime_core::PresenceEvent;

use super::NodeSelf;
use super::shared::Shared;
use crate::presence::events::{EventQueue, QueuedEvent};
use crate::presence::store::PresenceFuture;

/// Lives inside the store's state, under its lock, so reaping a node and handing
/// its claimed events out again is one step.
#[derive(Default)]
pub(super) struct QueueState {
    cap: usize,
    /// Oldest first.
    waiting: VecDeque<(u64, PresenceEvent)>,
    /// key → (node that took it, the event).
    claimed: HashMap<u64, (String, PresenceEvent)>,
    dropped: u64,
    next_key: u64,
}

impl QueueState {
    pub(super) fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Queues `event` unless the queue is full (waiting and claimed together, as
    /// the Redis stream counts them); returns whether it was queued.
    pub(super) fn push(&mut self, event: PresenceEvent) -> bool {
        if self.waiting.len() + self.claimed.len() >= self.cap {
            self.dropped += 1;
            return false;
        }
        self.next_key += 1;
        self.waiting.push_back((self.next_key, event));
        true
    }

    fn take(&mut self, node: &str) -> Option<QueuedEvent> {
        let (key, event) = self.waiting.pop_front()?;
        self.claimed.insert(key, (node.to_owned(), event.clone()));
        Some(QueuedEvent {
            key: key.to_string(),
            event,
        })
    }

    fn done(&mut self, key: &str) {
        if let Ok(key) = key.parse::<u64>() {
            self.claimed.remove(&key);
        }
    }

    /// Puts what `node` had taken and not finished back at the front, oldest
    /// first, for another node. Returns how many.
    pub(super) fn release(&mut self, node: &str) -> usize {
        let mut back: Vec<u64> = self
            .claimed
            .iter()
            .filter(|(_, (taker, _))| taker == node)
            .map(|(key, _)| *key)
            .collect();
        back.sort_unstable();
        for key in back.iter().rev() {
            if let Some((_, event)) = self.claimed.remove(key) {
                self.waiting.push_front((*key, event));
            }
        }
        back.len()
    }
}

/// One node's view of the shared queue: what its endpoint's
/// [`events`](crate::presence::PresenceStore::events) returns.
pub(super) struct MemoryEvents {
    pub(super) shared: Arc<Shared>,
    /// The node's handle: once it is gone (the engine was dropped, as in a crash)
    /// or stopped, this view takes nothing more; what it took waits for the reaper.
    pub(super) node: Weak<NodeSelf>,
    pub(super) name: String,
}

impl EventQueue for MemoryEvents {
    fn next(&self) -> PresenceFuture<QueuedEvent> {
        let shared = self.shared.clone();
        let node = self.node.clone();
        let name = self.name.clone();
        let alive = move || node.upgrade().is_some_and(|n| n.is_running());
        Box::pin(async move {
            loop {
                let notified = shared.queued.notified();
                tokio::pin!(notified);
                // Registered before looking, so a push in between still wakes us.
                notified.as_mut().enable();
                if alive()
                    && let Some(event) = shared.lock().queue.take(&name)
                {
                    return Ok(event);
                }
                notified.await;
            }
        })
    }

    fn done(&self, key: &str) -> PresenceFuture<()> {
        self.shared.lock().queue.done(key);
        Box::pin(async { Ok(()) })
    }

    fn depth(&self) -> u64 {
        self.shared.lock().queue.waiting.len() as u64
    }

    /// Shared by every engine of a hub: the queue is the cluster's, as in Redis.
    fn dropped(&self) -> u64 {
        self.shared.lock().queue.dropped
    }
}
