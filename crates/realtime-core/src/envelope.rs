//! What travels between nodes: [`Envelope`]s in MessagePack, on channels named
//! after their target, and the node tag every connection id carries.
//!
//! A node subscribes only to the channels it has local interest in: one per topic,
//! user and role with a local connection, its own node channel (for sends to one of
//! its connections and for control requests), and the broadcast channel.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::route::Route;

/// A node's tag: 48 random bits chosen at process start. It names the node's
/// channel and is the first six bytes of every connection id the node hands out,
/// so any node can tell which node owns a connection without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeTag(u64);

impl NodeTag {
    const MASK: u64 = (1 << 48) - 1;

    /// A tag from any 64 random bits (only the low 48 are kept).
    pub fn from_random(bits: u64) -> NodeTag {
        NodeTag(bits & Self::MASK)
    }

    /// The tag of the node that created `id`.
    pub fn of_connection(id: &Uuid) -> NodeTag {
        let b = id.as_bytes();
        NodeTag(u64::from_be_bytes([
            0, 0, b[0], b[1], b[2], b[3], b[4], b[5],
        ]))
    }

    /// A connection id owned by this node: the tag, then `random` (a version-8 UUID).
    pub fn connection_id(self, random: [u8; 16]) -> Uuid {
        let mut bytes = random;
        bytes[..6].copy_from_slice(&self.0.to_be_bytes()[2..]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for NodeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// Channel names under a deployment prefix, so deployments can share one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    prefix: String,
}

impl Channels {
    pub fn new(prefix: impl Into<String>) -> Self {
        Channels {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn topic(&self, topic: &str) -> String {
        format!("{}:topic:{topic}", self.prefix)
    }

    pub fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }

    pub fn role(&self, role: &str) -> String {
        format!("{}:role:{role}", self.prefix)
    }

    pub fn node(&self, node: NodeTag) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub fn broadcast(&self) -> String {
        format!("{}:broadcast", self.prefix)
    }

    /// The channel a message on `route` is published to.
    pub fn for_route(&self, route: &Route) -> String {
        match route {
            Route::User(u) => self.user(u),
            Route::Role(r) => self.role(r),
            Route::Connection(id) => self.node(NodeTag::of_connection(id)),
            Route::Broadcast => self.broadcast(),
            Route::Topic(t) => self.topic(t.as_str()),
        }
    }
}

/// One relayed item. `origin` and `seq` identify it: `seq` grows by one per
/// envelope an origin publishes, so a receiver can drop a duplicate (an envelope
/// re-published after a bus reconnect) by remembering the last `seq` per origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: NodeTag,
    pub seq: u64,
    pub body: Body,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// A message for every local recipient of `route`, already serialized.
    Message {
        route: Route,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Close every local connection of `user` (3503).
    DisconnectUser { user: String },
    /// A request for the node owning a connection; answered with a [`Body::Reply`]
    /// on `reply_to`'s channel.
    Request {
        id: u64,
        reply_to: NodeTag,
        op: ControlOp,
    },
    /// The answer to a request.
    Reply { id: u64, reply: ControlReply },
}

/// An operation on one connection, carried out by the node that owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlOp {
    Deliver {
        connection: Uuid,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    Subscribe {
        connection: Uuid,
        topic: String,
    },
    Unsubscribe {
        connection: Uuid,
        topic: String,
    },
    Disconnect {
        connection: Uuid,
    },
}

/// The owner's answer: whether the connection exists there and whether the
/// operation changed anything (queued the message, added the subscription, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub found: bool,
    pub changed: bool,
}

/// An envelope that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable envelope: {0}")]
pub struct DecodeError(String);

impl Envelope {
    /// MessagePack bytes (compact, with field names omitted).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data, no maps with non-string keys: encoding cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Topic;

    #[test]
    fn connection_ids_carry_their_node_tag() {
        let tag = NodeTag::from_random(0xdead_beef_cafe_f00d);
        assert_eq!(tag.as_u64(), 0xbeef_cafe_f00d);
        for i in 0..50u8 {
            let id = tag.connection_id([i.wrapping_mul(37); 16]);
            assert_eq!(NodeTag::of_connection(&id), tag);
            assert_eq!(id.get_version_num(), 8);
        }
        let other = NodeTag::from_random(1);
        assert_ne!(NodeTag::of_connection(&tag.connection_id([0; 16])), other);
    }

    #[test]
    fn routes_map_to_prefixed_channels() {
        let c = Channels::new("rt");
        let tag = NodeTag::from_random(0xabc);
        assert_eq!(c.for_route(&Route::User("42".into())), "rt:user:42");
        assert_eq!(c.for_route(&Route::Role("admin".into())), "rt:role:admin");
        assert_eq!(c.for_route(&Route::Broadcast), "rt:broadcast");
        let t = Topic::parse("order:1").unwrap();
        assert_eq!(c.for_route(&Route::Topic(t)), "rt:topic:order:1");
        let id = tag.connection_id([7; 16]);
        assert_eq!(c.for_route(&Route::Connection(id)), "rt:node:000000000abc");
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_an_error() {
        let e = Envelope {
            origin: NodeTag::from_random(5),
            seq: 9,
            body: Body::Message {
                route: Route::Topic(Topic::parse("a:b").unwrap()),
                payload: br#"{"type":"x"}"#.to_vec(),
            },
        };
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        let r = Envelope {
            origin: NodeTag::from_random(5),
            seq: 10,
            body: Body::Request {
                id: 3,
                reply_to: NodeTag::from_random(6),
                op: ControlOp::Subscribe {
                    connection: Uuid::nil(),
                    topic: "t".into(),
                },
            },
        };
        assert_eq!(Envelope::decode(&r.encode()).unwrap(), r);
        assert!(Envelope::decode(b"\xc1garbage").is_err());
        assert!(Envelope::decode(&[]).is_err());
    }

    #[test]
    fn invalid_topics_do_not_decode() {
        #[derive(Serialize)]
        enum FakeRoute {
            #[allow(dead_code)]
            User(String),
            #[allow(dead_code)]
            Role(String),
            #[allow(dead_code)]
            Connection(Uuid),
            #[allow(dead_code)]
            Broadcast,
            Topic(String),
        }
        let bytes = rmp_serde::to_vec(&FakeRoute::Topic("bad topic".into())).unwrap();
        assert!(rmp_serde::from_slice::<Route>(&bytes).is_err());
    }
}
