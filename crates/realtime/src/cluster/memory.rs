//! The in-memory bus and directory: several engines in one process share a
//! [`MemoryHub`] (and, for history topics, its [`MemoryHistory`]). Dependency-free;
//! deliveries are synchronous.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use uuid::Uuid;

use crate::history::memory::MemoryHistory;
use crate::presence::memory::{MemoryPresence, Shared as PresenceState};

use super::bus::{
    BusError, BusEvent, BusFuture, BusStatus, ClusterDirectory, ConnectionKey, CountFuture,
    DirectoryEntry, Inbox, ListFuture, MessageBus, Page, PageRequest, Snapshot, TopicsFuture,
};

/// A process-local message hub. Give each engine its own [`MemoryHub::bus`] and
/// [`MemoryHub::directory`].
#[derive(Default, Clone)]
pub struct MemoryHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
pub(crate) struct HubInner {
    /// channel -> member id -> that member's inbox
    channels: Mutex<HashMap<String, BTreeMap<u64, Inbox>>>,
    entries: Mutex<HashMap<Uuid, DirectoryEntry>>,
    next_member: Mutex<u64>,
    /// The history store every engine on the hub shares, made on first use.
    history: OnceLock<Arc<MemoryHistory>>,
    /// The presence state every engine's endpoint shares, made on first use.
    presence: OnceLock<Arc<PresenceState>>,
}

impl HubInner {
    /// Hands `bytes` to every member listening on `channel`; returns how many.
    pub(crate) fn deliver(&self, channel: &str, bytes: &[u8]) -> usize {
        let receivers: Vec<Inbox> = {
            let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            channels
                .get(channel)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        for inbox in &receivers {
            inbox(BusEvent::Envelope(bytes));
        }
        receivers.len()
    }
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHub").finish_non_exhaustive()
    }
}

impl MemoryHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus endpoint for one engine.
    pub fn bus(&self) -> Arc<MemoryBus> {
        let mut next = self
            .inner
            .next_member
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *next += 1;
        Arc::new(MemoryBus {
            hub: self.inner.clone(),
            member: *next,
            inbox: OnceLock::new(),
            channels: Mutex::new(HashSet::new()),
        })
    }

    /// The history store shared by every engine on this hub (the same one on every
    /// call): give it to each engine's [`ClusterConfig::history`](crate::ClusterConfig).
    /// An append publishes the publication on the hub to every engine subscribed to
    /// the topic, the appending one included.
    pub fn history(&self) -> Arc<MemoryHistory> {
        self.inner
            .history
            .get_or_init(|| Arc::new(MemoryHistory::on_hub(Arc::downgrade(&self.inner))))
            .clone()
    }

    /// A presence endpoint for one engine (a new one on every call, like
    /// [`bus`](Self::bus)): give each engine its own as its
    /// [`ClusterConfig::presence`](crate::ClusterConfig). The endpoints share one
    /// state; each started endpoint is a node with its own lease, and one whose
    /// engine is dropped without leaving is reaped by another after the lease.
    pub fn presence(&self) -> Arc<MemoryPresence> {
        let shared = self.inner.presence.get_or_init(PresenceState::new).clone();
        Arc::new(MemoryPresence::on(shared))
    }

    /// A directory endpoint for one engine.
    pub fn directory(&self) -> Arc<MemoryDirectory> {
        Arc::new(MemoryDirectory {
            hub: self.inner.clone(),
            node: OnceLock::new(),
        })
    }
}

/// One engine's endpoint on a [`MemoryHub`].
pub struct MemoryBus {
    hub: Arc<HubInner>,
    member: u64,
    inbox: OnceLock<Inbox>,
    channels: Mutex<HashSet<String>>,
}

impl MemoryBus {
    fn join(&self, channel: &str) {
        let Some(inbox) = self.inbox.get() else {
            return;
        };
        let mut channels = self.hub.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(channel.to_owned())
            .or_default()
            .insert(self.member, inbox.clone());
    }

    fn leave(&self, channel: &str) {
        let mut channels = self.hub.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = channels.get_mut(channel) {
            members.remove(&self.member);
            if members.is_empty() {
                channels.remove(channel);
            }
        }
    }
}

impl MemoryBus {
    /// Hands the envelope to every member listening on `channel`; returns how many.
    fn deliver(&self, channel: String, envelope: Vec<u8>) -> usize {
        self.hub.deliver(&channel, &envelope)
    }
}

impl MessageBus for MemoryBus {
    fn start(&self, inbox: Inbox, always: Vec<String>) {
        if self.inbox.set(inbox).is_err() {
            return;
        }
        let pending: Vec<String> = {
            let mut set = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            set.extend(always);
            set.iter().cloned().collect()
        };
        for channel in pending {
            self.join(&channel);
        }
    }

    fn publish(&self, channel: String, envelope: Vec<u8>) -> Result<(), BusError> {
        self.deliver(channel, envelope);
        Ok(())
    }

    fn publish_counted(&self, channel: String, envelope: Vec<u8>) -> CountFuture {
        let n = self.deliver(channel, envelope);
        Box::pin(async move { Ok(n) })
    }

    fn update_interest(&self, subscribe: Vec<String>, unsubscribe: Vec<String>) -> BusFuture {
        let mut set = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for channel in subscribe {
            self.join(&channel);
            set.insert(channel);
        }
        for channel in unsubscribe {
            self.leave(&channel);
            set.remove(&channel);
        }
        Box::pin(async { Ok(()) })
    }

    fn status(&self) -> BusStatus {
        BusStatus::Up
    }
}

/// One engine's view of the hub's shared directory.
pub struct MemoryDirectory {
    hub: Arc<HubInner>,
    node: OnceLock<String>,
}

impl ClusterDirectory for MemoryDirectory {
    fn start(&self, node: String, _snapshot: Snapshot) {
        let _ = self.node.set(node);
    }

    fn upsert(&self, entry: DirectoryEntry) -> BusFuture {
        let mut entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(entry.connection.id, entry);
        Box::pin(async { Ok(()) })
    }

    fn remove(&self, connection: Uuid) -> BusFuture {
        let mut entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&connection);
        Box::pin(async { Ok(()) })
    }

    fn add_topic(&self, connection: Uuid, topic: String) -> BusFuture {
        let mut entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(&connection)
            && !entry.connection.topics.contains(&topic)
        {
            entry.connection.topics.push(topic);
        }
        Box::pin(async { Ok(()) })
    }

    fn remove_topic(&self, connection: Uuid, topic: String) -> BusFuture {
        let mut entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(&connection) {
            entry.connection.topics.retain(|t| t != &topic);
        }
        Box::pin(async { Ok(()) })
    }

    fn list(&self, page: PageRequest<ConnectionKey>) -> ListFuture {
        let mut all: Vec<(ConnectionKey, DirectoryEntry)> = {
            let entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .values()
                .map(|e| ((e.node.clone(), e.connection.id), e.clone()))
                .collect()
        };
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let page = Page::from_sorted(all, page);
        Box::pin(async move { Ok(page) })
    }

    fn topics(&self, page: PageRequest<String>) -> TopicsFuture {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        {
            let entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
            for entry in entries.values() {
                for topic in &entry.connection.topics {
                    *counts.entry(topic.clone()).or_insert(0) += 1;
                }
            }
        }
        let page = Page::from_sorted(counts.into_iter().map(|(t, n)| (t.clone(), (t, n))), page);
        Box::pin(async move { Ok(page) })
    }

    fn leave(&self) -> BusFuture {
        if let Some(node) = self.node.get() {
            let mut entries = self.hub.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(|_, e| &e.node != node);
        }
        Box::pin(async { Ok(()) })
    }

    fn status(&self) -> BusStatus {
        BusStatus::Up
    }
}
