//! The in-memory [`PresenceStore`]: one node on its own ([`MemoryPresence::new`])
//! or several engines in one process sharing a [`MemoryHub`](crate::MemoryHub)
//! (each with its own endpoint from [`MemoryHub::presence`](crate::MemoryHub::presence)),
//! with node leases, the offline/vacated grace and a bounded event queue.
//!
//! A node is alive while its endpoint is: the heartbeat task holds it weakly, so
//! when the engine holding the endpoint is dropped without [`leave`](PresenceStore::leave)
//! (a crash), renewals stop, the lease runs out and another node of the hub reaps
//! it. [`MemoryPresence::halt`] does the same while the endpoint is still held.

mod members;
mod queue;
mod shared;
mod state;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use realtime_core::{ConnectionId, Topic};
use tokio::time::{Instant, MissedTickBehavior};

use self::queue::MemoryEvents;
pub(crate) use self::shared::Shared;
use crate::cluster::bus::BusStatus;
use crate::presence::events::EventQueue;
use crate::presence::store::{
    ClusterCounts, Member, MemberPage, PresenceFuture, PresenceNotice, PresenceSettings,
    PresenceSink, PresenceStore, SnapshotFn, TopicCounts, UserStatus,
};

/// Presence kept in this process. See the module docs.
pub struct MemoryPresence {
    shared: Arc<Shared>,
    node: Arc<NodeSelf>,
}

/// One endpoint's node: its name and whether it still runs.
pub(crate) struct NodeSelf {
    /// Owns writes made before `start` names the node.
    provisional: String,
    name: OnceLock<String>,
    /// Stopped as a killed node would be: no renewals, no more events taken.
    halted: AtomicBool,
    /// Left gracefully: later writes are ignored.
    left: AtomicBool,
    events: OnceLock<Arc<MemoryEvents>>,
}

impl NodeSelf {
    fn name(&self) -> &str {
        self.name.get().unwrap_or(&self.provisional)
    }

    pub(super) fn is_running(&self) -> bool {
        !self.halted.load(Ordering::Acquire) && !self.left.load(Ordering::Acquire)
    }
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryPresence {
    /// A store for one node on its own.
    pub fn new() -> Self {
        Self::on(Shared::new())
    }

    /// Another node's endpoint on `shared` (the hub's state).
    pub(crate) fn on(shared: Arc<Shared>) -> Self {
        MemoryPresence {
            shared,
            node: Arc::new(NodeSelf {
                provisional: format!("unstarted-{}", uuid::Uuid::new_v4()),
                name: OnceLock::new(),
                halted: AtomicBool::new(false),
                left: AtomicBool::new(false),
                events: OnceLock::new(),
            }),
        }
    }

    /// Stops this node as a kill would, for tests: no more lease renewals (once
    /// the lease runs out another node of the hub reaps it) and its event queue
    /// hands out nothing more.
    pub fn halt(&self) {
        self.node.halted.store(true, Ordering::Release);
    }

    /// Applies a write unless this node has left; the name is read under the
    /// state lock so a write racing `start` lands on the right node.
    fn write(&self, change: impl FnOnce(&mut state::State, &str, u64, &mut state::Effects)) {
        let node = &self.node;
        self.shared.apply(|s, now, fx| {
            if !node.left.load(Ordering::Acquire) {
                change(s, node.name(), now, fx);
            }
        });
    }
}

impl PresenceStore for MemoryPresence {
    fn start(
        &self,
        node: String,
        settings: PresenceSettings,
        snapshot: SnapshotFn,
        sink: PresenceSink,
    ) {
        let me = &self.node;
        let fresh = self.shared.apply(|s, now, _| {
            if me.name.set(node.clone()).is_err() {
                return false;
            }
            s.start(&me.provisional, &node, &settings, now);
            true
        });
        if !fresh {
            tracing::warn!(
                node,
                "presence store started twice; the second start is ignored"
            );
            return;
        }
        if settings.events {
            let _ = me.events.set(Arc::new(MemoryEvents {
                shared: self.shared.clone(),
                node: Arc::downgrade(me),
                name: node.clone(),
            }));
        }
        self.shared.start_grace_loop(Arc::downgrade(me));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                node,
                "presence: no tokio runtime, the lease will not be renewed"
            );
            return;
        };
        runtime.spawn(heartbeat(
            Arc::downgrade(me),
            self.shared.clone(),
            settings.lease.heartbeat(),
            snapshot,
            sink,
        ));
    }

    fn connected(&self, user_id: &str, connection: ConnectionId) -> PresenceFuture<()> {
        self.write(|s, node, now, fx| s.connect(node, user_id, connection, now, fx));
        Box::pin(async { Ok(()) })
    }

    fn disconnected(&self, _user_id: &str, connection: ConnectionId) -> PresenceFuture<()> {
        self.write(|s, node, now, fx| s.disconnect(node, connection, now, fx));
        Box::pin(async { Ok(()) })
    }

    fn joined(&self, topic: &Topic, member: Member) -> PresenceFuture<()> {
        self.write(|s, node, now, fx| {
            s.join(node, topic, member, now, fx);
        });
        Box::pin(async { Ok(()) })
    }

    fn left(&self, topic: &Topic, user_id: &str, connection: ConnectionId) -> PresenceFuture<()> {
        self.write(|s, node, now, fx| {
            s.leave(node, topic, user_id, connection, now, fx);
        });
        Box::pin(async { Ok(()) })
    }

    fn members(
        &self,
        topic: &Topic,
        after: Option<String>,
        limit: usize,
    ) -> PresenceFuture<MemberPage> {
        let page = self.shared.lock().members(topic, after.as_deref(), limit);
        Box::pin(async move { Ok(page) })
    }

    fn topic_counts(&self, topic: &Topic) -> PresenceFuture<TopicCounts> {
        let counts = self.shared.lock().topic_counts(topic);
        Box::pin(async move { Ok(counts) })
    }

    fn user(&self, user_id: &str) -> PresenceFuture<UserStatus> {
        let status = self.shared.lock().user(user_id);
        Box::pin(async move { Ok(status) })
    }

    fn counts(&self) -> PresenceFuture<ClusterCounts> {
        let counts = self.shared.lock().counts();
        Box::pin(async move { Ok(counts) })
    }

    fn leave(&self) -> PresenceFuture<()> {
        let node = &self.node;
        self.shared.apply(|s, now, fx| {
            if !node.left.swap(true, Ordering::AcqRel) {
                s.part(node.name(), now, fx);
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn status(&self) -> BusStatus {
        BusStatus::Up
    }

    fn events(&self) -> Option<Arc<dyn EventQueue>> {
        self.node
            .events
            .get()
            .map(|q| q.clone() as Arc<dyn EventQueue>)
    }
}

/// Renews `node`'s lease every `every`, reaps expired nodes and writes this
/// node's entries again if they were lost; ends when the node's endpoint is
/// dropped, halted or has left.
async fn heartbeat(
    node: Weak<NodeSelf>,
    shared: Arc<Shared>,
    every: Duration,
    snapshot: SnapshotFn,
    sink: PresenceSink,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let name = match node.upgrade() {
            Some(me) if me.is_running() => me.name().to_owned(),
            _ => return,
        };
        let beat = shared.apply(|s, now, fx| s.heartbeat(&name, now, fx));
        for (node, left) in beat.reaped {
            sink(PresenceNotice::Reaped { node, left });
        }
        if let Some(joined) = beat
            .restore
            .and_then(|reaps| restore(&shared, &name, reaps, &snapshot))
        {
            sink(PresenceNotice::Restored { joined });
        }
    }
}

/// Reads the snapshot outside the lock (it reads the engine, which may be
/// writing to this store) and writes it again; what the node removed meanwhile
/// stays out (see [`state::State::restore`]).
fn restore(
    shared: &Shared,
    name: &str,
    reaps: u64,
    snapshot: &SnapshotFn,
) -> Option<Vec<(Topic, Member)>> {
    let snap = snapshot();
    shared.apply(|s, now, fx| s.restore(name, snap, reaps, now, fx))
}
