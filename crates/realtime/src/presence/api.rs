//! The library's presence API: a presence topic's members (paged, grouped by
//! user) and counts, one user's online status and the cluster's online counts,
//! each answered from the store, or from this node's registry (`degraded`) when
//! the store cannot be asked.

use std::sync::Arc;
use std::time::Duration;

use realtime_core::message::rfc3339_millis;
use realtime_core::{ConnectionId, InvalidTopic, Topic};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::events::EventQueue;
use super::store::{Member, PresenceError, PresenceFuture};
use crate::cluster::bus::BusStatus;
use crate::service::{Realtime, now_rfc3339};

/// Members per page when the query names no limit.
pub const DEFAULT_PRESENCE_LIMIT: u64 = 100;
/// The largest page a query may ask for.
pub const MAX_PRESENCE_LIMIT: u64 = 1000;
/// How long a presence read may take before the answer is built from this node
/// instead (a store that hangs is as good as down).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Which page of a topic's members to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceQuery {
    /// Members per page, 1 to [`MAX_PRESENCE_LIMIT`]; `None`: [`DEFAULT_PRESENCE_LIMIT`].
    pub limit: Option<u64>,
    /// The `cursor` of the previous page; `None`: the first page.
    pub cursor: Option<String>,
}

/// One page of a presence topic's members, grouped by user.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicPresence {
    pub topic: String,
    /// Sorted by `user_id`, each user's connections by `connection_id`. A user
    /// whose connections straddle two pages appears on both.
    pub users: Vec<PresenceUser>,
    /// Pass back for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The store could not be asked: only this node's members are listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// A user in a presence topic, with each of their connections subscribed to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceUser {
    pub user_id: String,
    pub connections: Vec<PresenceConnection>,
}

/// One connection subscribed to a presence topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceConnection {
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub connection_id: ConnectionId,
    /// RFC 3339, as in the connection's welcome.
    pub connected_at: String,
    /// The connection's token metadata claims.
    pub info: Map<String, Value>,
}

/// How many are in a presence topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceStats {
    pub topic: String,
    pub connections: u64,
    pub users: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// One user's online status across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserPresence {
    pub user_id: String,
    pub online: bool,
    /// The user's connections on every node.
    pub connections: u64,
    /// RFC 3339 with milliseconds: now while online; when the last connection
    /// closed while offline; `null` when the store does not know.
    pub last_seen: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// Online users and their connections across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OnlineStats {
    pub users: u64,
    pub connections: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// A presence query that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceQueryError {
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] InvalidTopic),
    #[error("the topic keeps no presence")]
    NoPresence,
    #[error("`limit` must be between 1 and {MAX_PRESENCE_LIMIT}")]
    BadLimit,
    #[error("`cursor` is malformed: pass back one this server gave out")]
    BadCursor,
}

/// Where a page ended, as handed to the client: the last member listed and, for
/// a page the store answered, the store's own cursor. A page from this node's
/// registry has none, so the walk it started continues from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor(String, ConnectionId, Option<String>);

/// Every cursor [`Cursor::decode`] accepts, and nothing else: the user id in hex,
/// `.`, the connection id (hyphenated), and for a store's page `.` and the
/// store's cursor in hex. Each such text is a place in the order (the stores
/// take any cursor of theirs as one), so a client can only send a malformed
/// cursor, never a well-formed one that fails.
pub const PRESENCE_CURSOR_PATTERN: &str = "^(?:[0-9A-Fa-f]{2})*\\.\
    [0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\
    (?:\\.(?:[0-9A-Fa-f]{2})*)?$";

impl Cursor {
    fn encode(&self) -> String {
        let mut text = format!("{}.{}", hex::encode(&self.0), self.1.hyphenated());
        if let Some(store) = &self.2 {
            text.push('.');
            text.push_str(&hex::encode(store));
        }
        text
    }

    /// No length cap of its own: a cursor grows with the user id it names, which
    /// nothing bounds, and the transports already bound what a client can send
    /// (the WebSocket message size, the HTTP request line). Bytes that are not
    /// UTF-8 (a cursor this server did not write) still name a place.
    fn decode(text: &str) -> Result<Cursor, PresenceQueryError> {
        let bad = |_| PresenceQueryError::BadCursor;
        let text_of = |hex_text: &str| {
            hex::decode(hex_text).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        };
        let mut parts = text.split('.');
        let (Some(user), Some(id), store, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PresenceQueryError::BadCursor);
        };
        // Only the hyphenated form (36 characters) the cursors are written in.
        if id.len() != 36 {
            return Err(PresenceQueryError::BadCursor);
        }
        Ok(Cursor(
            text_of(user).map_err(bad)?,
            ConnectionId::parse_str(id).map_err(|_| PresenceQueryError::BadCursor)?,
            store.map(text_of).transpose().map_err(bad)?,
        ))
    }
}

/// The page size a query asks for, checked.
fn page_limit(limit: Option<u64>) -> Result<usize, PresenceQueryError> {
    match limit.unwrap_or(DEFAULT_PRESENCE_LIMIT) {
        n @ 1..=MAX_PRESENCE_LIMIT => Ok(n as usize),
        _ => Err(PresenceQueryError::BadLimit),
    }
}

/// Groups members in `(user_id, connection_id)` order by user.
fn group(members: Vec<Member>) -> Vec<PresenceUser> {
    let mut users: Vec<PresenceUser> = Vec::new();
    for m in members {
        let connection = PresenceConnection {
            connection_id: m.connection_id,
            connected_at: m.connected_at,
            info: m.info,
        };
        match users.last_mut() {
            Some(last) if last.user_id == m.user_id => last.connections.push(connection),
            _ => users.push(PresenceUser {
                user_id: m.user_id,
                connections: vec![connection],
            }),
        }
    }
    users
}

/// RFC 3339 with milliseconds for a time in ms since the Unix epoch.
fn rfc3339_from_ms(ms: u64) -> Option<String> {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(rfc3339_millis)
}

impl Realtime {
    /// One page of `topic`'s members, grouped by user. Cluster-wide, or this
    /// node's only with `degraded: true` when the store cannot be asked.
    pub async fn presence(
        &self,
        topic: &str,
        query: PresenceQuery,
    ) -> Result<TopicPresence, PresenceQueryError> {
        let topic = self.parse_topic(topic)?;
        self.presence_of(&topic, query).await
    }

    pub(crate) async fn presence_of(
        &self,
        topic: &Topic,
        query: PresenceQuery,
    ) -> Result<TopicPresence, PresenceQueryError> {
        self.require_presence(topic)?;
        let limit = page_limit(query.limit)?;
        let after = query.cursor.as_deref().map(Cursor::decode).transpose()?;
        let presence = &self.inner.presence;
        // A walk begun on this node's registry continues there: its cursor has
        // no store position to go on from.
        let from_store = after.as_ref().is_none_or(|c| c.2.is_some());
        if from_store
            && let Some(page) = self
                .ask(|| {
                    presence
                        .store
                        .members(topic, after.as_ref().and_then(|c| c.2.clone()), limit)
                })
                .await
        {
            let cursor = match (page.next, page.members.last()) {
                (Some(next), Some(last)) => {
                    Some(Cursor(last.user_id.clone(), last.connection_id, Some(next)).encode())
                }
                _ => None,
            };
            return Ok(self.answered(TopicPresence {
                topic: topic.to_string(),
                users: group(page.members),
                cursor,
                degraded: presence.local_only,
            }));
        }
        let (members, more) = self.local_members(topic, after.map(|c| (c.0, c.1)), limit);
        let cursor = match (more, members.last()) {
            (true, Some(last)) => {
                Some(Cursor(last.user_id.clone(), last.connection_id, None).encode())
            }
            _ => None,
        };
        Ok(self.answered(TopicPresence {
            topic: topic.to_string(),
            users: group(members),
            cursor,
            degraded: true,
        }))
    }

    /// How many connections and users `topic` has, cluster-wide (or this node's,
    /// `degraded`).
    pub async fn presence_stats(&self, topic: &str) -> Result<PresenceStats, PresenceQueryError> {
        let topic = self.parse_topic(topic)?;
        self.presence_stats_of(&topic).await
    }

    pub(crate) async fn presence_stats_of(
        &self,
        topic: &Topic,
    ) -> Result<PresenceStats, PresenceQueryError> {
        self.require_presence(topic)?;
        let presence = &self.inner.presence;
        let (counts, degraded) = match self.ask(|| presence.store.topic_counts(topic)).await {
            Some(c) => ((c.connections, c.users), presence.local_only),
            None => (self.local_topic_counts(topic), true),
        };
        Ok(self.answered(PresenceStats {
            topic: topic.to_string(),
            connections: counts.0,
            users: counts.1,
            degraded,
        }))
    }

    /// Whether `user_id` is online anywhere in the cluster, with how many
    /// connections, and when they were last seen.
    pub async fn user_presence(&self, user_id: &str) -> UserPresence {
        let presence = &self.inner.presence;
        let (connections, last_seen_ms, degraded) =
            match self.ask(|| presence.store.user(user_id)).await {
                Some(s) => (s.connections, s.last_seen_ms, presence.local_only),
                None => (
                    self.inner.registry.of_user(user_id).len() as u64,
                    None,
                    true,
                ),
            };
        let online = connections > 0;
        self.answered(UserPresence {
            user_id: user_id.to_owned(),
            online,
            connections,
            last_seen: if online {
                Some(now_rfc3339())
            } else {
                last_seen_ms.and_then(rfc3339_from_ms)
            },
            degraded,
        })
    }

    /// Online users and connections across the cluster.
    pub async fn online_stats(&self) -> OnlineStats {
        let presence = &self.inner.presence;
        let (users, connections, degraded) = match self.ask(|| presence.store.counts()).await {
            Some(c) => (c.users, c.connections, presence.local_only),
            None => (
                self.inner.registry.user_count() as u64,
                self.inner.registry.len() as u64,
                true,
            ),
        };
        self.answered(OnlineStats {
            users,
            connections,
            degraded,
        })
    }

    /// The webhook event queue, when `config.presence.events` is on.
    pub fn presence_events(&self) -> Option<Arc<dyn EventQueue>> {
        self.inner.presence.store.events()
    }

    fn require_presence(&self, topic: &Topic) -> Result<(), PresenceQueryError> {
        match self.inner.config.topic_policy.presence_for(topic.as_str()) {
            Some(_) => Ok(()),
            None => Err(PresenceQueryError::NoPresence),
        }
    }

    /// Asks the store unless it is down; `None` when it is down, fails or hangs.
    async fn ask<T>(&self, call: impl FnOnce() -> PresenceFuture<T>) -> Option<T> {
        if let BusStatus::Down { .. } = self.inner.presence.store.status() {
            return None;
        }
        match tokio::time::timeout(READ_TIMEOUT, call()).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(PresenceError::Unavailable(reason))) => {
                tracing::debug!(%reason, "presence store unavailable; answering from this node");
                None
            }
            Err(_) => {
                tracing::debug!("presence store did not answer in time; answering from this node");
                None
            }
        }
    }

    /// Counts an answer that is degraded.
    fn answered<T: Degraded>(&self, answer: T) -> T {
        if answer.is_degraded() {
            self.inner.metrics.presence.degraded_answers.inc();
        }
        answer
    }

    /// This node's members of `topic` after `after` in `(user_id,
    /// connection_id)` order: at most `limit`, and whether more follow.
    fn local_members(
        &self,
        topic: &Topic,
        after: Option<(String, ConnectionId)>,
        limit: usize,
    ) -> (Vec<Member>, bool) {
        let mut handles = self.inner.registry.topic_members(topic.as_str());
        handles.sort_by(|a, b| {
            let (a, b) = (a.info(), b.info());
            (a.user_id.as_bytes(), a.id).cmp(&(b.user_id.as_bytes(), b.id))
        });
        let start = match &after {
            // The hyphenated text of a UUID sorts as its bytes do.
            Some((user, id)) => handles.partition_point(|h| {
                let info = h.info();
                (info.user_id.as_bytes(), info.id) <= (user.as_bytes(), *id)
            }),
            None => 0,
        };
        let rest = &handles[start..];
        let members = rest
            .iter()
            .take(limit)
            .map(|h| super::engine::member_of(h))
            .collect();
        (members, rest.len() > limit)
    }

    /// This node's `(connections, users)` in `topic`.
    fn local_topic_counts(&self, topic: &Topic) -> (u64, u64) {
        let handles = self.inner.registry.topic_members(topic.as_str());
        let users: std::collections::HashSet<&str> =
            handles.iter().map(|h| &*h.info().user_id).collect();
        (handles.len() as u64, users.len() as u64)
    }
}

/// Answers that can say they are degraded.
trait Degraded {
    fn is_degraded(&self) -> bool;
}

macro_rules! degraded {
    ($($t:ty),*) => {$(
        impl Degraded for $t {
            fn is_degraded(&self) -> bool {
                self.degraded
            }
        }
    )*};
}

degraded!(TopicPresence, PresenceStats, UserPresence, OnlineStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(page_limit(None), Ok(100));
        assert_eq!(page_limit(Some(1)), Ok(1));
        assert_eq!(page_limit(Some(1000)), Ok(1000));
        assert_eq!(page_limit(Some(0)), Err(PresenceQueryError::BadLimit));
        assert_eq!(page_limit(Some(1001)), Err(PresenceQueryError::BadLimit));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = ConnectionId::from_u128(7);
        for c in [
            Cursor("42".into(), id, Some("store\0next".into())),
            Cursor("we\"ird\0user".into(), id, None),
            Cursor(String::new(), id, Some(String::new())),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }
        for bad in [
            "",
            "!!!",
            "bm9wZQ",
            &"A".repeat(64 * 1024),
            "343.00000000-0000-0000-0000-000000000007",
            "3432.00000000000000000000000000000007",
            "3432.00000000-0000-0000-0000-000000000007.73.74",
        ] {
            assert_eq!(
                Cursor::decode(bad),
                Err(PresenceQueryError::BadCursor),
                "{bad}"
            );
        }
    }

    #[test]
    fn members_group_by_consecutive_user() {
        let m = |u: &str, n: u128| Member {
            user_id: u.into(),
            connection_id: ConnectionId::from_u128(n),
            connected_at: "t".into(),
            info: Map::new(),
        };
        let users = group(vec![m("a", 1), m("a", 2), m("b", 3)]);
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].connections.len(), 2);
        assert_eq!(users[1].user_id, "b");
        assert!(group(Vec::new()).is_empty());
    }

    #[test]
    fn last_seen_is_rfc3339_with_milliseconds() {
        assert_eq!(
            rfc3339_from_ms(1_800_000_000_123).as_deref(),
            Some("2027-01-15T08:00:00.123Z")
        );
    }
}
