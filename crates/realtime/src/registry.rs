//! The node-local connection registry and its indexes: by id, user, role and topic.
//!
//! Every index is a sharded `DashMap`, so fan-out to different users, roles or topics
//! never contends on one lock. Fan-out holds only a shard's read lock while it queues
//! frames (a non-blocking `try_send`), never across an await or a socket write.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use realtime_core::{ConnectionId, Topic};

use crate::handle::{ConnectionGone, ConnectionHandle};

type Members = HashMap<ConnectionId, Arc<ConnectionHandle>>;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    connections: DashMap<ConnectionId, Arc<ConnectionHandle>>,
    users: DashMap<Arc<str>, Members>,
    roles: DashMap<Arc<str>, Members>,
    topics: DashMap<Topic, Members>,
    /// Connections per user, counted from open to close (a connection counts
    /// before it is reachable, so concurrent handshakes cannot overshoot a limit).
    user_slots: DashMap<Arc<str>, usize>,
}

impl Registry {
    pub(crate) fn insert(&self, handle: Arc<ConnectionHandle>) {
        let info = handle.info();
        let id = info.id;
        add_member(&self.users, info.user_id.clone(), &handle);
        for role in info.roles.iter() {
            add_member(&self.roles, role.clone(), &handle);
        }
        self.connections.insert(id, handle);
    }

    /// Counts one more connection for `user` unless it already has `max`. Returns
    /// whether it was counted. With no limit (`max == 0`) nothing is counted, so the
    /// default configuration keeps no per-user entry.
    pub(crate) fn reserve_user_slot(&self, user: &Arc<str>, max: usize) -> bool {
        if max == 0 {
            return true;
        }
        let mut slots = self.user_slots.entry(user.clone()).or_insert(0);
        if *slots >= max {
            return false;
        }
        *slots += 1;
        true
    }

    /// Gives back a slot taken by [`reserve_user_slot`](Self::reserve_user_slot)
    /// with the same `max`.
    pub(crate) fn release_user_slot(&self, user: &str, max: usize) {
        if max == 0 {
            return;
        }
        self.user_slots.remove_if_mut(user, |_, slots| {
            *slots = slots.saturating_sub(1);
            *slots == 0
        });
    }

    /// Removes a connection from every index. Returns its handle and the topics it
    /// was subscribed to, the first time only.
    pub(crate) fn remove(&self, id: ConnectionId) -> Option<(Arc<ConnectionHandle>, Vec<Topic>)> {
        let (_, handle) = self.connections.remove(&id)?;
        let info = handle.info();
        remove_member(&self.users, &info.user_id, id);
        for role in info.roles.iter() {
            remove_member(&self.roles, role, id);
        }
        let topics: Vec<Topic> = handle.take_topics().into_iter().collect();
        for topic in &topics {
            remove_member(&self.topics, topic.as_str(), id);
        }
        Some((handle, topics))
    }

    pub(crate) fn get(&self, id: ConnectionId) -> Option<Arc<ConnectionHandle>> {
        self.connections.get(&id).map(|h| h.value().clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.connections.len()
    }

    pub(crate) fn all(&self) -> Vec<Arc<ConnectionHandle>> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }

    pub(crate) fn of_user(&self, user: &str) -> Vec<Arc<ConnectionHandle>> {
        self.users
            .get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Subscribes a connection; `Ok(true)` when it was not subscribed before.
    /// `on_added` runs while the connection's topic set is locked, so whatever it
    /// records (cluster interest) is in place before a removal can see the topic.
    pub(crate) fn subscribe(
        &self,
        handle: &Arc<ConnectionHandle>,
        topic: &Topic,
        on_added: impl FnOnce(),
    ) -> Result<bool, ConnectionGone> {
        handle.add_topic(topic, || {
            add_member(&self.topics, topic.clone(), handle);
            on_added();
        })
    }

    /// Unsubscribes a connection; `true` when it was subscribed. `on_removed` runs
    /// under the same lock as `subscribe`'s hook.
    pub(crate) fn unsubscribe(
        &self,
        handle: &ConnectionHandle,
        topic: &str,
        on_removed: impl FnOnce(),
    ) -> bool {
        handle.remove_topic(topic, || {
            remove_member(&self.topics, topic, handle.id());
            on_removed();
        })
    }

    /// How many topics have a subscriber.
    pub(crate) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Topic name → subscriber count, for every topic with a subscriber.
    pub(crate) fn topic_counts(&self) -> Vec<(Topic, usize)> {
        self.topics
            .iter()
            .map(|e| (e.key().clone(), e.value().len()))
            .collect()
    }

    pub(crate) fn deliver_to_user(&self, user: &str, frame: &Utf8Bytes) -> usize {
        deliver_members(self.users.get(user).as_deref(), frame)
    }

    pub(crate) fn deliver_to_role(&self, role: &str, frame: &Utf8Bytes) -> usize {
        deliver_members(self.roles.get(role).as_deref(), frame)
    }

    pub(crate) fn deliver_to_topic(&self, topic: &str, frame: &Utf8Bytes) -> usize {
        deliver_members(self.topics.get(topic).as_deref(), frame)
    }

    /// As [`deliver_to_topic`](Self::deliver_to_topic), leaving out the
    /// connections `skip` names (those still recovering on a history topic).
    pub(crate) fn deliver_to_topic_except(
        &self,
        topic: &str,
        frame: &Utf8Bytes,
        skip: impl Fn(ConnectionId) -> bool,
    ) -> usize {
        self.topics.get(topic).map_or(0, |m| {
            m.iter()
                .filter(|(id, h)| !skip(**id) && h.try_send(frame))
                .count()
        })
    }

    /// The local connections subscribed to `topic`.
    pub(crate) fn topic_members(&self, topic: &str) -> Vec<Arc<ConnectionHandle>> {
        self.topics
            .get(topic)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many users have a connection on this node.
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// How many local connections are subscribed to `topic`.
    pub(crate) fn topic_subscribers(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, |m| m.len())
    }

    pub(crate) fn deliver_to_connection(&self, id: ConnectionId, frame: &Utf8Bytes) -> usize {
        self.connections
            .get(&id)
            .map_or(0, |h| usize::from(h.try_send(frame)))
    }

    pub(crate) fn deliver_to_all(&self, frame: &Utf8Bytes) -> usize {
        self.connections
            .iter()
            .filter(|h| h.try_send(frame))
            .count()
    }
}

fn deliver_members(members: Option<&Members>, frame: &Utf8Bytes) -> usize {
    members.map_or(0, |m| m.values().filter(|h| h.try_send(frame)).count())
}

fn add_member<K>(index: &DashMap<K, Members>, key: K, handle: &Arc<ConnectionHandle>)
where
    K: std::hash::Hash + Eq,
{
    index
        .entry(key)
        .or_default()
        .insert(handle.id(), handle.clone());
}

fn remove_member<K>(index: &DashMap<K, Members>, key: &str, id: ConnectionId)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<str>,
{
    let now_empty = match index.get_mut(key) {
        Some(mut members) => {
            members.remove(&id);
            members.is_empty()
        }
        None => false,
    };
    if now_empty {
        index.remove_if(key, |_, members| members.is_empty());
    }
}
