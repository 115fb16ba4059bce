//! The in-memory presence state every node shares: members per topic, online
//! counts, what each node wrote and its lease, the debounce of online/offline and
//! occupied/vacated, and the event queue. Plain data; time is an argument.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use realtime_core::presence::Occupancy;
use realtime_core::{ConnectionId, LeaseRules, Topic};

mod debounce;

use super::members::TopicMembers;
use super::queue::QueueState;
use crate::presence::store::{
    ClusterCounts, Member, MemberPage, PresenceSettings, PresenceSnapshot, TopicCounts, UserStatus,
};

/// How long a user's last-seen time is kept, as in Redis.
const SEEN_FOR_MS: u64 = 30 * 24 * 3600 * 1000;

/// What a state change asks of the shell once the lock is released.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Effects {
    /// An event was queued or handed back: wake the queue's readers.
    pub queued: bool,
    /// A leave is pending: the grace loops have a new deadline.
    pub pending: bool,
}

/// What the debounce is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Subject {
    User(String),
    Topic(Topic),
}

/// Everything one node wrote, so it can all be undone when the node goes.
#[derive(Default)]
struct NodeRecord {
    /// The node's lease rules, once started.
    rules: Option<LeaseRules>,
    connections: HashSet<ConnectionId>,
    members: HashSet<(Topic, String, ConnectionId)>,
    /// Another node reaped this one while it was still alive: its next
    /// heartbeat writes its entries again from its snapshot.
    lost: Option<Lost>,
    /// How many times another node reaped this one, so a restore can tell it
    /// was reaped again while it read its snapshot.
    reaps: u64,
}

/// What a node that was reaped while alive removed since: its snapshot is read
/// outside the lock, maybe before some of these removals were written, and must
/// bring none of them back.
#[derive(Default)]
struct Lost {
    connections: HashSet<ConnectionId>,
    members: HashSet<(Topic, String, ConnectionId)>,
}

/// What the debounce and the events run with: the first node's settings.
#[derive(Debug, Clone, Copy)]
struct Debounce {
    grace: Duration,
}

#[derive(Default)]
pub(crate) struct State {
    /// `Some` once a node started with `settings.events`.
    debounce: Option<Debounce>,
    /// node → when its lease runs out (ms).
    leases: HashMap<String, u64>,
    nodes: HashMap<String, NodeRecord>,
    /// Every open connection: who it belongs to.
    connections: HashMap<ConnectionId, String>,
    /// user → open connections, cluster-wide.
    online: HashMap<String, u64>,
    /// user → when their last connection closed, and the same ordered by time
    /// so old entries are forgotten cheaply.
    seen: HashMap<String, u64>,
    seen_order: BTreeSet<(u64, String)>,
    topics: HashMap<Topic, TopicMembers>,
    occupancy: HashMap<Subject, Occupancy>,
    /// Leaves waiting for their grace: (due ms, subject).
    pending: BTreeSet<(u64, Subject)>,
    pub(super) queue: QueueState,
}

/// What a node's heartbeat found.
pub(super) struct Beat {
    /// Nodes this one reaped, with the members they had.
    pub reaped: Vec<(String, Vec<(Topic, Member)>)>,
    /// This node's entries are gone: write them again from the snapshot (how
    /// many times it was reaped so far, see [`State::restore`]).
    pub restore: Option<u64>,
}

impl State {
    /// A node started: its lease begins now; the first start sets the events.
    pub(super) fn start(
        &mut self,
        provisional: &str,
        node: &str,
        settings: &PresenceSettings,
        now_ms: u64,
    ) {
        if self.debounce.is_none() && settings.events {
            self.debounce = Some(Debounce {
                grace: settings.offline_grace,
            });
            self.queue.set_cap(settings.event_queue);
        }
        // Writes made before start belong to the node from now on.
        let mut record = self.nodes.remove(provisional).unwrap_or_default();
        record.rules = Some(settings.lease);
        self.nodes.insert(node.to_owned(), record);
        self.leases
            .insert(node.to_owned(), settings.lease.expires_at(now_ms));
    }

    /// Every write goes through here: for a node that was reaped while alive,
    /// takes a lease again so what it writes now can still be reaped.
    fn record(&mut self, node: &str, now_ms: u64) -> &mut NodeRecord {
        let record = self.nodes.entry(node.to_owned()).or_default();
        if let Some(rules) = record.rules
            && !self.leases.contains_key(node)
        {
            self.leases
                .insert(node.to_owned(), rules.expires_at(now_ms));
        }
        record
    }

    pub(super) fn connect(
        &mut self,
        node: &str,
        user_id: &str,
        connection: ConnectionId,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        self.record(node, now_ms).connections.insert(connection);
        if self.connections.contains_key(&connection) {
            return;
        }
        self.connections.insert(connection, user_id.to_owned());
        let count = self.online.entry(user_id.to_owned()).or_insert(0);
        *count += 1;
        let count = *count;
        self.count(Subject::User(user_id.to_owned()), count, now_ms, fx);
    }

    pub(super) fn disconnect(
        &mut self,
        node: &str,
        connection: ConnectionId,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let record = self.record(node, now_ms);
        record.connections.remove(&connection);
        if let Some(lost) = &mut record.lost {
            lost.connections.insert(connection);
        }
        self.close(connection, now_ms, fx);
    }

    /// A connection is gone, whoever wrote it.
    fn close(&mut self, connection: ConnectionId, now_ms: u64, fx: &mut Effects) {
        let Some(user_id) = self.connections.remove(&connection) else {
            return;
        };
        let count = match self.online.get_mut(&user_id) {
            Some(n) => {
                *n -= 1;
                *n
            }
            None => 0,
        };
        if count == 0 {
            self.online.remove(&user_id);
            self.saw(&user_id, now_ms);
        }
        self.count(Subject::User(user_id), count, now_ms, fx);
    }

    fn saw(&mut self, user_id: &str, now_ms: u64) {
        if let Some(old) = self.seen.insert(user_id.to_owned(), now_ms) {
            self.seen_order.remove(&(old, user_id.to_owned()));
        }
        self.seen_order.insert((now_ms, user_id.to_owned()));
    }

    /// Forgets last-seen times older than Redis keeps them.
    fn forget_seen(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(SEEN_FOR_MS);
        while let Some((at, user)) = self.seen_order.first().cloned() {
            if at >= cutoff {
                break;
            }
            self.seen_order.pop_first();
            self.seen.remove(&user);
        }
    }

    /// Returns whether the member is new to the topic.
    pub(super) fn join(
        &mut self,
        node: &str,
        topic: &Topic,
        member: Member,
        now_ms: u64,
        fx: &mut Effects,
    ) -> bool {
        let owned = (topic.clone(), member.user_id.clone(), member.connection_id);
        let record = self.record(node, now_ms);
        if let Some(lost) = &mut record.lost {
            lost.members.remove(&owned);
        }
        record.members.insert(owned);
        let members = self.topics.entry(topic.clone()).or_default();
        if !members.insert(member) {
            return false;
        }
        let count = members.counts().connections;
        self.count(Subject::Topic(topic.clone()), count, now_ms, fx);
        true
    }

    pub(super) fn leave(
        &mut self,
        node: &str,
        topic: &Topic,
        user_id: &str,
        connection: ConnectionId,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<Member> {
        let owned = (topic.clone(), user_id.to_owned(), connection);
        let record = self.record(node, now_ms);
        record.members.remove(&owned);
        if let Some(lost) = &mut record.lost {
            lost.members.insert(owned);
        }
        self.remove_member(topic, user_id, connection, now_ms, fx)
    }

    fn remove_member(
        &mut self,
        topic: &Topic,
        user_id: &str,
        connection: ConnectionId,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<Member> {
        let members = self.topics.get_mut(topic)?;
        let member = members.remove(user_id, connection)?;
        let count = members.counts().connections;
        if members.is_empty() {
            self.topics.remove(topic);
        }
        self.count(Subject::Topic(topic.clone()), count, now_ms, fx);
        Some(member)
    }

    /// Undoes everything `node` wrote, as its own leaves and disconnects would.
    /// Returns the members it had.
    fn undo(&mut self, node: &str, now_ms: u64, fx: &mut Effects) -> Vec<(Topic, Member)> {
        let Some(record) = self.nodes.get_mut(node) else {
            return Vec::new();
        };
        let members = std::mem::take(&mut record.members);
        let connections = std::mem::take(&mut record.connections);
        let mut left: Vec<(Topic, Member)> = members
            .into_iter()
            .filter_map(|(topic, user, conn)| {
                let member = self.remove_member(&topic, &user, conn, now_ms, fx)?;
                Some((topic, member))
            })
            .collect();
        for connection in connections {
            self.close(connection, now_ms, fx);
        }
        if self.queue.release(node) > 0 {
            fx.queued = true;
        }
        left.sort_by(|a, b| {
            (&a.0, &a.1.user_id, a.1.connection_id).cmp(&(&b.0, &b.1.user_id, b.1.connection_id))
        });
        left
    }

    /// Graceful leave: the node's entries go now and its lease with them.
    pub(super) fn part(&mut self, node: &str, now_ms: u64, fx: &mut Effects) {
        self.undo(node, now_ms, fx);
        self.nodes.remove(node);
        self.leases.remove(node);
    }

    /// `node`'s heartbeat: renews its lease (unless its entries were lost),
    /// reaps every other node whose lease ran out, forgets old last-seen times.
    pub(super) fn heartbeat(&mut self, node: &str, now_ms: u64, fx: &mut Effects) -> Beat {
        let mut beat = Beat {
            reaped: Vec::new(),
            restore: None,
        };
        // No record: the node left (a heartbeat racing its leave does nothing).
        let Some(record) = self.nodes.get(node) else {
            return beat;
        };
        let lost = record.lost.is_some() || !self.leases.contains_key(node);
        beat.restore = lost.then_some(record.reaps);
        if !lost && let Some(rules) = record.rules {
            self.leases
                .insert(node.to_owned(), rules.expires_at(now_ms));
        }
        let mut dead: Vec<String> = self
            .leases
            .iter()
            .filter(|(other, expires)| other.as_str() != node && now_ms >= **expires)
            .map(|(other, _)| other.clone())
            .collect();
        dead.sort();
        beat.reaped = dead
            .into_iter()
            .map(|other| {
                // Under the state lock: this node is the only one that reaps it.
                self.leases.remove(&other);
                let left = self.undo(&other, now_ms, fx);
                if let Some(record) = self.nodes.get_mut(&other) {
                    // Reaped again before it restored: what it removed since
                    // the first time still must not come back.
                    record.lost.get_or_insert_default();
                    record.reaps += 1;
                }
                (other, left)
            })
            .collect();
        self.forget_seen(now_ms);
        beat
    }

    /// Writes `node`'s entries again from `snapshot`, read after the heartbeat
    /// that returned `reaps` found them gone, leaving out whatever the node
    /// removed since it was reaped. Returns the members written again; `None`
    /// when the node was reaped once more meanwhile (the snapshot may lack what
    /// it wrote in between: the next heartbeat reads it again).
    pub(super) fn restore(
        &mut self,
        node: &str,
        snapshot: PresenceSnapshot,
        reaps: u64,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<Vec<(Topic, Member)>> {
        let record = self.nodes.get_mut(node)?;
        if record.reaps != reaps {
            return None;
        }
        let removed = record.lost.take().unwrap_or_default();
        if let Some(rules) = record.rules {
            self.leases
                .insert(node.to_owned(), rules.expires_at(now_ms));
        }
        for (user_id, connection) in snapshot.connections {
            if !removed.connections.contains(&connection) {
                self.connect(node, &user_id, connection, now_ms, fx);
            }
        }
        let joined = snapshot
            .members
            .into_iter()
            .filter(|(topic, member)| {
                let id = member.connection_id;
                let owned = (topic.clone(), member.user_id.clone(), id);
                let gone = removed.connections.contains(&id) || removed.members.contains(&owned);
                let known = self
                    .topics
                    .get(topic)
                    .is_some_and(|m| m.contains(&member.user_id, id));
                !gone && !known && self.join(node, topic, member.clone(), now_ms, fx)
            })
            .collect();
        Some(joined)
    }

    pub(super) fn members(&self, topic: &Topic, after: Option<&str>, limit: usize) -> MemberPage {
        self.topics
            .get(topic)
            .map(|m| m.page(after, limit))
            .unwrap_or_default()
    }

    pub(super) fn topic_counts(&self, topic: &Topic) -> TopicCounts {
        self.topics
            .get(topic)
            .map(TopicMembers::counts)
            .unwrap_or_default()
    }

    pub(super) fn user(&self, user_id: &str) -> UserStatus {
        let connections = self.online.get(user_id).copied().unwrap_or(0);
        UserStatus {
            connections,
            last_seen_ms: if connections == 0 {
                self.seen.get(user_id).copied()
            } else {
                None
            },
        }
    }

    pub(super) fn counts(&self) -> ClusterCounts {
        ClusterCounts {
            users: self.online.len() as u64,
            connections: self.connections.len() as u64,
        }
    }
}
