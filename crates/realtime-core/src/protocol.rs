//! The client protocol: JSON text frames in both directions.
//!
//! Inbound frames decode into a [`Command`] or a [`ProtocolError`] that carries the
//! command's `ref` (when one could be read) and a stable [`ErrorCode`]. Outbound
//! frames are [`ServerFrame`]s. docs/PROTOCOL.md is the prose form of this module.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;
use uuid::Uuid;

use crate::history::{Position, Unrecoverable};
use crate::topic::Topic;

/// A decoded client command. `reference` is the optional `ref` the reply echoes
/// (a JSON string or number, echoed verbatim).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Subscribe; on a history topic, `since` asks for every publication after
    /// that position first.
    Subscribe {
        topic: Topic,
        since: Option<Position>,
        reference: Option<Value>,
    },
    /// Read a history topic's publications after `since` (from the oldest held
    /// without it), at most `limit` (capped at
    /// [`MAX_HISTORY_LIMIT`](crate::history::MAX_HISTORY_LIMIT)).
    History {
        topic: Topic,
        since: Option<Position>,
        limit: Option<u64>,
        reference: Option<Value>,
    },
    Unsubscribe {
        topic: Topic,
        reference: Option<Value>,
    },
    Publish {
        topic: Topic,
        message: Map<String, Value>,
        reference: Option<Value>,
    },
    Ping {
        reference: Option<Value>,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        token: String,
        reference: Option<Value>,
    },
    /// A page of a presence topic's members: at most `limit` (the engine checks
    /// the range) after `cursor` (opaque, from the previous page).
    Presence {
        topic: Topic,
        limit: Option<u64>,
        cursor: Option<String>,
        reference: Option<Value>,
    },
    /// How many connections and users a presence topic has.
    PresenceStats {
        topic: Topic,
        reference: Option<Value>,
    },
}

/// Stable error codes carried by `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing or mistyped field, a binary frame.
    BadRequest,
    /// `action` names no known command.
    UnknownAction,
    /// The topic name breaks the documented character set or length.
    InvalidTopic,
    /// The topic policy refuses this connection.
    Forbidden,
    /// A server-side failure while handling the command.
    Internal,
    /// The message could not be relayed to the other nodes (the bus is down).
    BusUnavailable,
    /// A `refresh` token did not verify; the message carries the reason.
    InvalidToken,
    /// A `refresh` token names another user or other roles than the connection's.
    TokenMismatch,
    /// The connection sent commands faster than its rate limit; this one was dropped.
    RateLimited,
    /// A per-connection limit (subscriptions) is reached; the command was refused.
    LimitExceeded,
    /// A published message the topic cannot take as it is: `offset` or `epoch`
    /// set by the client on a history topic.
    InvalidMessage,
    /// `history` on a topic that keeps no history.
    NoHistory,
    /// The history store could not be read or written right now (Redis is down).
    HistoryUnavailable,
    /// `presence` or `presence_stats` on a topic that keeps no presence.
    NoPresence,
    /// The application backend a proxy hook consults did not answer in time,
    /// could not be reached or answered something unreadable: the command was
    /// refused (a proxy that is down never allows).
    ProxyUnavailable,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
            ErrorCode::BusUnavailable => "bus_unavailable",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenMismatch => "token_mismatch",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::HistoryUnavailable => "history_unavailable",
            ErrorCode::NoPresence => "no_presence",
            ErrorCode::ProxyUnavailable => "proxy_unavailable",
        }
    }
}

/// A command that could not be carried out; the connection stays open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub reference: Option<Value>,
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(reference: Option<Value>, code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            reference,
            code,
            message: message.into(),
        }
    }

    /// The `error` frame for this error.
    pub fn frame(&self) -> ServerFrame<'_> {
        ServerFrame::Error {
            reference: self.reference.as_ref(),
            code: self.code,
            message: &self.message,
        }
    }
}

/// Decodes one text frame. `max_topic_len` is the configured topic length limit.
pub fn decode_command(text: &str, max_topic_len: usize) -> Result<Command, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(None, ErrorCode::BadRequest, format!("not valid JSON: {e}"))
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::new(
            None,
            ErrorCode::BadRequest,
            "a command must be a JSON object",
        ));
    };
    let reference = match obj.remove("ref") {
        None | Some(Value::Null) => None,
        Some(r @ (Value::String(_) | Value::Number(_))) => Some(r),
        Some(_) => {
            return Err(ProtocolError::new(
                None,
                ErrorCode::BadRequest,
                "`ref` must be a string or a number",
            ));
        }
    };
    let bad = |reference: &Option<Value>, msg: &str| {
        ProtocolError::new(reference.clone(), ErrorCode::BadRequest, msg)
    };
    let action = match obj.get("action") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(bad(&reference, "`action` must be a string")),
        None => return Err(bad(&reference, "missing field `action`")),
    };
    let topic =
        |obj: &Map<String, Value>, reference: &Option<Value>| -> Result<Topic, ProtocolError> {
            match obj.get("topic") {
                Some(Value::String(t)) => Topic::parse_with_max(t, max_topic_len).map_err(|e| {
                    ProtocolError::new(reference.clone(), ErrorCode::InvalidTopic, e.to_string())
                }),
                Some(_) => Err(bad(reference, "`topic` must be a string")),
                None => Err(bad(reference, "missing field `topic`")),
            }
        };
    match action {
        "subscribe" => Ok(Command::Subscribe {
            topic: topic(&obj, &reference)?,
            since: since(&obj, &reference)?,
            reference,
        }),
        "history" => Ok(Command::History {
            topic: topic(&obj, &reference)?,
            since: since(&obj, &reference)?,
            limit: limit(&obj, &reference)?,
            reference,
        }),
        "presence" => {
            let cursor = match obj.remove("cursor") {
                None | Some(Value::Null) => None,
                Some(Value::String(c)) => Some(c),
                Some(_) => return Err(bad(&reference, "`cursor` must be a string")),
            };
            Ok(Command::Presence {
                topic: topic(&obj, &reference)?,
                limit: limit(&obj, &reference)?,
                cursor,
                reference,
            })
        }
        "presence_stats" => Ok(Command::PresenceStats {
            topic: topic(&obj, &reference)?,
            reference,
        }),
        "unsubscribe" => Ok(Command::Unsubscribe {
            topic: topic(&obj, &reference)?,
            reference,
        }),
        "ping" => Ok(Command::Ping { reference }),
        "refresh" => match obj.remove("token") {
            Some(Value::String(token)) if !token.is_empty() => {
                Ok(Command::Refresh { token, reference })
            }
            Some(Value::String(_)) => Err(bad(&reference, "`token` is empty")),
            Some(_) => Err(bad(&reference, "`token` must be a string")),
            None => Err(bad(&reference, "missing field `token`")),
        },
        "publish" => {
            let topic = topic(&obj, &reference)?;
            let message = match obj.remove("message") {
                Some(Value::Object(m)) if matches!(m.get("type"), Some(Value::String(_))) => m,
                Some(Value::Object(_)) => {
                    return Err(bad(&reference, "`message` must have a string `type`"));
                }
                Some(_) => return Err(bad(&reference, "`message` must be a JSON object")),
                None => return Err(bad(&reference, "missing field `message`")),
            };
            Ok(Command::Publish {
                topic,
                message,
                reference,
            })
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(ProtocolError::new(
                reference,
                ErrorCode::UnknownAction,
                format!("unknown action `{shown}`"),
            ))
        }
    }
}

/// The optional `limit` of a command: a non-negative integer (its range is the
/// command's business).
fn limit(
    obj: &Map<String, Value>,
    reference: &Option<Value>,
) -> Result<Option<u64>, ProtocolError> {
    match obj.get("limit") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(_) => Err(ProtocolError::new(
            reference.clone(),
            ErrorCode::BadRequest,
            "`limit` must be a non-negative integer",
        )),
    }
}

/// The optional `since` of a command: `{"offset": <u64>, "epoch": <string>}`.
fn since(
    obj: &Map<String, Value>,
    reference: &Option<Value>,
) -> Result<Option<Position>, ProtocolError> {
    let bad = |msg: &str| ProtocolError::new(reference.clone(), ErrorCode::BadRequest, msg);
    let since = match obj.get("since") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(since)) => since,
        Some(_) => return Err(bad("`since` must be an object with `offset` and `epoch`")),
    };
    let offset = match since.get("offset") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad("`since.offset` must be a non-negative integer"))?,
        _ => return Err(bad("`since.offset` must be a non-negative integer")),
    };
    let epoch = match since.get("epoch") {
        Some(Value::String(e)) if e.len() <= MAX_EPOCH_LEN => e.clone(),
        Some(Value::String(_)) => return Err(bad("`since.epoch` is too long")),
        _ => return Err(bad("`since.epoch` must be a string")),
    };
    Ok(Some(Position { offset, epoch }))
}

/// Longest epoch a client may send back (the server's are far shorter).
pub const MAX_EPOCH_LEN: usize = 64;

/// The `ref` of a command frame, if it is a JSON object with a string or number
/// `ref`; everything else in it is skipped, not built. For replies to frames
/// that are refused before decoding (rate limit).
pub fn peek_reference(text: &str) -> Option<Value> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Visits an object's entries, keeping the last `ref` like `decode_command`
    /// (which reads a `Value`, where a repeated key overwrites) and skipping the rest.
    struct LastRef;

    impl<'de> Visitor<'de> for LastRef {
        type Value = Option<Value>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut reference = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "ref" {
                    reference = Some(map.next_value::<Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(reference)
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let reference = de.deserialize_map(LastRef).ok()?;
    de.end().ok()?;
    reference.filter(|r| matches!(r, Value::String(_) | Value::Number(_)))
}

/// A frame the server sends. Serialize with [`ServerFrame::to_json`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerFrame<'a> {
    Welcome {
        connection_id: Uuid,
        user_id: &'a str,
        roles: &'a [Arc<str>],
        timestamp: &'a str,
        /// When the token expires (Unix seconds): refresh before then.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
    },
    /// On a history topic: the position the subscription starts from, and with
    /// `since`, whether every publication after it follows (`recovered`).
    Subscribed {
        topic: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Why not, when `recovered` is false.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<Unrecoverable>,
    },
    /// The answer to `history`: publications in offset order (each with its
    /// `offset` and `epoch`), and the topic's current position.
    History {
        topic: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        publications: &'a [Box<serde_json::value::RawValue>],
        offset: u64,
        epoch: &'a str,
        /// With `since`: whether the publications follow on from it (false: the
        /// page starts at the oldest held instead).
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// Messages on `topic` may not have reached this connection. On a history
    /// topic `offset` and `epoch` say where delivery continues from.
    Missed {
        topic: &'a str,
        reason: MissedReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    Unsubscribed {
        topic: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
    Published {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        /// Connections on this node the message was queued to.
        delivered: usize,
        /// Whether it was handed to the bus for the other nodes.
        relayed: bool,
        /// The position the publication got, on a history topic.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
    Refreshed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        /// The new token's expiry (Unix seconds).
        expires_at: i64,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        code: ErrorCode,
        message: &'a str,
    },
    ServerShutdown {
        message: &'a str,
        timestamp: &'a str,
    },
    /// The answer to `presence`: one page of members grouped by user (users by
    /// `user_id`, each user's connections by `connection_id`), serialized by the
    /// engine; `cursor` names the next page, if there is one.
    Presence {
        topic: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        users: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<&'a str>,
        /// The store could not be asked: only this node's members are listed.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        degraded: bool,
    },
    /// The answer to `presence_stats`.
    #[serde(rename = "presence_stats")]
    PresenceStats {
        topic: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        connections: u64,
        users: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        degraded: bool,
    },
    /// A connection subscribed to a `join_leave` topic (sent to its other
    /// subscribers).
    Join {
        topic: &'a str,
        user_id: &'a str,
        connection_id: Uuid,
    },
    /// A connection left a `join_leave` topic: unsubscribed, closed, or its node
    /// died.
    Leave {
        topic: &'a str,
        user_id: &'a str,
        connection_id: Uuid,
    },
}

/// Why a `missed` notice was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedReason {
    /// The node's link to the other nodes broke and came back: messages published
    /// meanwhile on a topic without history did not reach it.
    BusReconnected,
    /// The topic's history was lost (e.g. Redis restarted without persistence) or
    /// reset: publications after the last one delivered may be gone.
    HistoryLost,
    /// Publications the node had to read back were already trimmed or expired.
    HistoryTrimmed,
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests;
