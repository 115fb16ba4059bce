//! Presence in the engine: which store it uses, the hooks that tell the store
//! about connections and presence-topic memberships, the `join`/`leave` frames of
//! `join_leave` topics, and what the engine does with the store's notices.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::FutureExt;
use realtime_core::policy::PresenceMode;
use realtime_core::route::RouteKind;
use realtime_core::{ConnectionId, Route, ServerFrame, Topic};

use super::store::{
    Member, PresenceFuture, PresenceNotice, PresenceSink, PresenceSnapshot, PresenceStore,
    SnapshotFn,
};
use crate::handle::ConnectionHandle;
use crate::service::{Inner, Realtime};

/// The node name a standalone engine gives its store.
pub(crate) const STANDALONE_NODE: &str = "local";

/// The engine's presence state.
pub(crate) struct PresenceState {
    pub(crate) store: Arc<dyn PresenceStore>,
    /// The store is this node's own although the engine is in a cluster (the
    /// cluster has no presence store): every answer covers this node only.
    pub(crate) local_only: bool,
    /// Whether any topic keeps presence; without, subscriptions skip the hooks.
    enabled: bool,
    /// The snapshot and sink given to the store, held for the engine's lifetime
    /// so a store can tell (by their reference counts) when the engine is gone.
    given: OnceLock<(SnapshotFn, PresenceSink)>,
}

impl PresenceState {
    pub(crate) fn new(store: Arc<dyn PresenceStore>, local_only: bool, enabled: bool) -> Self {
        PresenceState {
            store,
            local_only,
            enabled,
            given: OnceLock::new(),
        }
    }
}

/// A member record for a local connection.
pub(crate) fn member_of(handle: &ConnectionHandle) -> Member {
    let info = handle.info();
    Member {
        user_id: info.user_id.to_string(),
        connection_id: info.id,
        connected_at: info.connected_at.clone(),
        info: info.metadata.clone(),
    }
}

/// Hands a write to the store and lets it finish on its own. Writes are taken
/// when called (the store's contract); polling once here runs a store that does
/// its work on the first poll, and the rest is spawned, never awaited.
fn fire(mut write: PresenceFuture<()>) {
    match (&mut write).now_or_never() {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(error = %e, "presence write not applied now"),
        None => {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = write.await {
                        tracing::debug!(error = %e, "presence write not applied now");
                    }
                });
            }
        }
    }
}

/// Which frame a membership change sends.
#[derive(Clone, Copy)]
enum Change {
    Join,
    Leave,
}

impl Realtime {
    /// Starts the store: once, when the engine is built.
    pub(crate) fn start_presence(&self, node: String) {
        let weak = Arc::downgrade(&self.inner);
        let snapshot: SnapshotFn = Arc::new(move || match Weak::upgrade(&weak) {
            Some(inner) => Realtime { inner }.presence_snapshot(),
            None => PresenceSnapshot::default(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let sink: PresenceSink = Arc::new(move |notice| {
            if let Some(inner) = Weak::upgrade(&weak) {
                Realtime { inner }.on_presence_notice(notice);
            }
        });
        let presence = &self.inner.presence;
        if presence
            .given
            .set((snapshot.clone(), sink.clone()))
            .is_err()
        {
            return;
        }
        presence
            .store
            .start(node, self.inner.config.presence, snapshot, sink);
    }

    /// How `topic` keeps presence, if it does.
    pub(crate) fn presence_mode(&self, topic: &Topic) -> Option<PresenceMode> {
        if !self.inner.presence.enabled {
            return None;
        }
        self.inner.config.topic_policy.presence_for(topic.as_str())
    }

    /// A connection became reachable on this node.
    pub(crate) fn presence_connected(&self, handle: &ConnectionHandle) {
        let info = handle.info();
        fire(self.inner.presence.store.connected(&info.user_id, info.id));
    }

    /// A connection was taken out of the registry, with the topics it held.
    pub(crate) fn presence_disconnected(&self, handle: &ConnectionHandle, topics: &[Topic]) {
        let info = handle.info();
        for topic in topics {
            if let Some(mode) = self.presence_mode(topic) {
                self.presence_left(topic, &info.user_id, info.id, mode);
            }
        }
        fire(
            self.inner
                .presence
                .store
                .disconnected(&info.user_id, info.id),
        );
    }

    /// A local connection subscribed to a presence topic. Called under the
    /// connection's topic lock, so its writes and frames keep their order.
    pub(crate) fn presence_joined(
        &self,
        handle: &ConnectionHandle,
        topic: &Topic,
        mode: PresenceMode,
    ) {
        fire(self.inner.presence.store.joined(topic, member_of(handle)));
        self.inner.metrics.presence.joins.inc();
        if mode.join_leave {
            let info = handle.info();
            self.membership_frame(Change::Join, topic, &info.user_id, info.id);
        }
    }

    /// A local connection left a presence topic (unsubscribed or closed). Called
    /// under its topic lock, or once it can take no new topic.
    pub(crate) fn presence_left(
        &self,
        topic: &Topic,
        user_id: &str,
        connection: ConnectionId,
        mode: PresenceMode,
    ) {
        fire(self.inner.presence.store.left(topic, user_id, connection));
        self.inner.metrics.presence.leaves.inc();
        if mode.join_leave {
            self.membership_frame(Change::Leave, topic, user_id, connection);
        }
    }

    /// Sends a `join` or `leave` frame to `topic`'s subscribers on every node,
    /// except the connection it is about. Not history: it bypasses the store.
    fn membership_frame(
        &self,
        change: Change,
        topic: &Topic,
        user_id: &str,
        connection: ConnectionId,
    ) {
        let (topic_name, connection_id) = (topic.as_str(), connection);
        let json = match change {
            Change::Join => ServerFrame::Join {
                topic: topic_name,
                user_id,
                connection_id,
            },
            Change::Leave => ServerFrame::Leave {
                topic: topic_name,
                user_id,
                connection_id,
            },
        }
        .to_json();
        if let Some(relay) = &self.inner.relay
            && let Err(e) = relay.relay_message(&Route::Topic(topic.clone()), &json)
        {
            // A hint only: a client re-reads `presence` after `missed`.
            tracing::debug!(error = %e, "join/leave frame not relayed");
        }
        let frame = Utf8Bytes::from(json);
        let delivered = self
            .inner
            .registry
            .deliver_to_topic_except(topic_name, &frame, |id| id == connection);
        // Counted as the other nodes count it when it reaches them (a message on
        // the topic route), so every node's figures mean the same.
        self.inner.metrics.sent(RouteKind::Topic, delivered);
    }

    /// What the store reports: members of a dead node (`leave` for each, sent
    /// from here to every node) or this node's members written again (`join`).
    fn on_presence_notice(&self, notice: PresenceNotice) {
        match notice {
            PresenceNotice::Reaped { node, left } => {
                tracing::info!(%node, members = left.len(), "presence: removed a dead node's members");
                self.inner
                    .metrics
                    .presence
                    .reaped_members
                    .inc_by(left.len() as u64);
                self.membership_frames(Change::Leave, &left);
            }
            PresenceNotice::Restored { joined } => {
                tracing::info!(
                    members = joined.len(),
                    "presence: this node's entries were gone and are written again"
                );
                self.membership_frames(Change::Join, &joined);
            }
        }
    }

    /// One `change` frame for each member on a `join_leave` topic.
    fn membership_frames(&self, change: Change, members: &[(Topic, Member)]) {
        for (topic, member) in members {
            if self.presence_mode(topic).is_some_and(|m| m.join_leave) {
                self.membership_frame(change, topic, &member.user_id, member.connection_id);
            }
        }
    }

    /// This node's connections and presence-topic memberships, for a store that
    /// writes them again.
    fn presence_snapshot(&self) -> PresenceSnapshot {
        let mut snapshot = PresenceSnapshot::default();
        for handle in self.inner.registry.all() {
            let info = handle.info();
            snapshot
                .connections
                .push((info.user_id.to_string(), info.id));
            if !self.inner.presence.enabled {
                continue;
            }
            for topic in handle.topics() {
                if self.presence_mode(&topic).is_some() {
                    snapshot.members.push((topic, member_of(&handle)));
                }
            }
        }
        snapshot
    }

    /// Graceful shutdown: the store removes this node's entries now.
    pub(crate) async fn leave_presence(&self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.inner.presence.store.leave()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "shutdown: presence entries not removed"),
            Err(_) => tracing::warn!("shutdown: presence entries not removed in time"),
        }
    }
}
