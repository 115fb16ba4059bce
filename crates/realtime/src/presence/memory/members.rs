//! One presence topic's members in the in-memory store: ordered by
//! `(user_id, connection_id)` for paging, with per-user counts so the topic's
//! numbers cost nothing to read; and the opaque cursor between pages.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use realtime_core::ConnectionId;

use crate::presence::store::{Member, MemberPage, TopicCounts};

/// `(user_id, connection_id as hyphenated text)`: `String`'s order is byte order,
/// which is the order the port promises (and Redis' lex order on `user\0conn`).
type Key = (String, String);

#[derive(Default)]
pub(super) struct TopicMembers {
    members: BTreeMap<Key, Member>,
    /// user → that user's connections in the topic; its length is the user count.
    users: HashMap<String, u64>,
}

impl TopicMembers {
    /// Adds or refreshes a member. Returns whether it is new.
    pub(super) fn insert(&mut self, member: Member) -> bool {
        let key = (member.user_id.clone(), member.connection_id.to_string());
        let user = member.user_id.clone();
        let new = self.members.insert(key, member).is_none();
        if new {
            *self.users.entry(user).or_insert(0) += 1;
        }
        new
    }

    /// Removes a member, if present.
    pub(super) fn remove(&mut self, user_id: &str, connection: ConnectionId) -> Option<Member> {
        let member = self
            .members
            .remove(&(user_id.to_owned(), connection.to_string()))?;
        if let Some(n) = self.users.get_mut(user_id) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(user_id);
            }
        }
        Some(member)
    }

    pub(super) fn contains(&self, user_id: &str, connection: ConnectionId) -> bool {
        self.members
            .contains_key(&(user_id.to_owned(), connection.to_string()))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(super) fn counts(&self) -> TopicCounts {
        TopicCounts {
            connections: self.members.len() as u64,
            users: self.users.len() as u64,
        }
    }

    /// At most `limit` members after the cursor `after`; `next` only when more
    /// follow. A `limit` of 0 returns nothing and no cursor (the engine refuses it
    /// before it gets here).
    pub(super) fn page(&self, after: Option<&str>, limit: usize) -> MemberPage {
        if limit == 0 {
            return MemberPage::default();
        }
        let start = match after {
            Some(cursor) => Bound::Excluded(decode_cursor(cursor)),
            None => Bound::Unbounded,
        };
        let mut found = self.members.range((start, Bound::Unbounded));
        let members: Vec<Member> = found.by_ref().take(limit).map(|(_, m)| m.clone()).collect();
        let next = match (found.next(), members.last()) {
            (Some(_), Some(last)) => Some(encode_cursor(&last.user_id, last.connection_id)),
            _ => None,
        };
        MemberPage { members, next }
    }
}

/// The cursor after `(user_id, connection)`: lowercase hex of `user\0conn`, so it
/// is safe in a URL and in JSON whatever the user id holds.
pub(super) fn encode_cursor(user_id: &str, connection: ConnectionId) -> String {
    let raw = format!("{user_id}\0{connection}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a cursor stands after. A cursor this store did not make still gives a
/// position (after its own text taken as a user id), so paging moves on and never
/// fails here; the engine decides whether to refuse it.
pub(super) fn decode_cursor(cursor: &str) -> Key {
    decode_hex(cursor)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|raw| {
            raw.rsplit_once('\0')
                .map(|(user, conn)| (user.to_owned(), conn.to_owned()))
        })
        .unwrap_or_else(|| (cursor.to_owned(), String::new()))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
