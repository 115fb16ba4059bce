//! Key names of presence in Redis, and the entries a node records in its owned
//! set (`c\0user\0conn`, `m\0topic\0user\0conn`) with their encoding.

use realtime::realtime_core::{ConnectionId, Topic};

/// Separates the parts of an entry and of a member (`user\0conn`): no topic and
/// no connection id holds a NUL, so an entry splits back without ambiguity.
pub(crate) const SEP: char = '\0';

/// Key names under one prefix, and this node's own.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
    pub(crate) node: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, node: &str) -> Self {
        Keys {
            base: format!("{prefix}:presence"),
            node: node.to_owned(),
        }
    }

    fn of(&self, kind: &str) -> String {
        format!("{}:{kind}", self.base)
    }

    /// ZSET node → lease expiry (ms, Redis clock).
    pub(crate) fn leases(&self) -> String {
        self.of("leases")
    }

    /// ZSET node → claim expiry (ms) of a dead node being reaped.
    pub(crate) fn reaping(&self) -> String {
        self.of("reaping")
    }

    /// HASH node → generation: changed whenever a node rewrites itself, so a
    /// reaper that claimed an older generation stops.
    pub(crate) fn gens(&self) -> String {
        self.of("gens")
    }

    /// SET of everything `node` wrote.
    pub(crate) fn owned(&self, node: &str) -> String {
        format!("{}:owned:{node}", self.base)
    }

    /// HASH user → connections across the cluster.
    pub(crate) fn online(&self) -> String {
        self.of("online")
    }

    /// HASH `connections` → connections across the cluster.
    pub(crate) fn stats(&self) -> String {
        self.of("stats")
    }

    /// SET of `u:{user}` / `t:{topic}` whose online/occupied was queued and
    /// whose offline/vacated was not yet.
    pub(crate) fn announced(&self) -> String {
        self.of("announced")
    }

    /// ZSET `u:{user}` / `t:{topic}` → when the last one left (ms).
    pub(crate) fn pending(&self) -> String {
        self.of("pending")
    }

    /// STREAM of webhook events, consumer group [`GROUP`](super::queue::GROUP).
    pub(crate) fn events(&self) -> String {
        self.of("events")
    }

    /// STRING: when the user's last connection closed (ms), expiring after 30 days.
    pub(crate) fn seen(&self, user: &str) -> String {
        format!("{}:seen:{user}", self.base)
    }

    /// ZSET of `user\0conn`, all score 0: lexical order is the page order.
    pub(crate) fn members(&self, topic: &str) -> String {
        format!("{}:members:{topic}", self.base)
    }

    /// HASH `user\0conn` → `{"connected_at","info"}`.
    pub(crate) fn info(&self, topic: &str) -> String {
        format!("{}:info:{topic}", self.base)
    }

    /// HASH user → connections of the user in the topic (HLEN = users).
    pub(crate) fn tusers(&self, topic: &str) -> String {
        format!("{}:tusers:{topic}", self.base)
    }
}

/// One thing a node wrote: a connection (online status) or a membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Entry {
    Connection {
        user: String,
        conn: ConnectionId,
    },
    Member {
        topic: String,
        user: String,
        conn: ConnectionId,
    },
}

impl Entry {
    pub(crate) fn member(topic: &Topic, user: &str, conn: ConnectionId) -> Self {
        Entry::Member {
            topic: topic.as_str().to_owned(),
            user: user.to_owned(),
            conn,
        }
    }

    /// The entry's text in the owned set.
    pub(crate) fn encode(&self) -> String {
        match self {
            Entry::Connection { user, conn } => format!("c{SEP}{user}{SEP}{conn}"),
            Entry::Member { topic, user, conn } => format!("m{SEP}{topic}{SEP}{user}{SEP}{conn}"),
        }
    }

    /// Reads an owned-set entry back. The connection id is the last part and the
    /// topic has no NUL, so a user id holding one still splits right.
    pub(crate) fn decode(text: &str) -> Option<Entry> {
        let (kind, rest) = text.split_once(SEP)?;
        let (rest, conn) = rest.rsplit_once(SEP)?;
        let conn = conn.parse().ok()?;
        match kind {
            "c" => Some(Entry::Connection {
                user: rest.to_owned(),
                conn,
            }),
            "m" => {
                let (topic, user) = rest.split_once(SEP)?;
                Some(Entry::Member {
                    topic: topic.to_owned(),
                    user: user.to_owned(),
                    conn,
                })
            }
            _ => None,
        }
    }
}

/// A topic member's name in `members`/`info`: `user\0conn` (built in Lua; here
/// for the tests).
#[cfg(test)]
pub(crate) fn member_name(user: &str, conn: ConnectionId) -> String {
    format!("{user}{SEP}{conn}")
}

/// Splits a member name back into user and connection.
pub(crate) fn split_member(name: &str) -> Option<(String, ConnectionId)> {
    let (user, conn) = name.rsplit_once(SEP)?;
    Some((user.to_owned(), conn.parse().ok()?))
}

/// The cursor handed to callers: the last member's name in lowercase hex, so it
/// travels in a URL or JSON untouched.
pub(crate) fn cursor(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A cursor back to a member name. Anything that is not one of ours still
/// gives a deterministic place in the order (its own bytes), never an error.
pub(crate) fn uncursor(cursor: &str) -> Vec<u8> {
    let bytes = cursor.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    if bytes.len().is_multiple_of(2) && bytes.iter().all(|b| hex(*b).is_some()) {
        bytes
            .chunks(2)
            .map(|p| (hex(p[0]).unwrap_or(0) * 16 + hex(p[1]).unwrap_or(0)) as u8)
            .collect()
    } else {
        bytes.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_cursors_round_trip() {
        let conn = ConnectionId::new_v4();
        for user in ["42", "a\0b", "", "ü:x"] {
            for entry in [
                Entry::Connection {
                    user: user.into(),
                    conn,
                },
                Entry::Member {
                    topic: "room:1".into(),
                    user: user.into(),
                    conn,
                },
            ] {
                assert_eq!(Entry::decode(&entry.encode()), Some(entry));
            }
            let name = member_name(user, conn);
            assert_eq!(split_member(&name), Some((user.to_owned(), conn)));
            assert_eq!(uncursor(&cursor(&name)), name.as_bytes());
        }
        assert_eq!(Entry::decode("x\0a\0b"), None);
        assert_eq!(Entry::decode("c\0a\0not-a-uuid"), None);
        assert_eq!(uncursor("zz"), b"zz");
        assert_eq!(uncursor("abc"), b"abc");
    }
}
