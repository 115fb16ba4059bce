//! The client protocol: JSON text frames in both directions.
//!
//! Inbound frames decode into a [`Command`] or a [`ProtocolError`] that carries the
//! command's `ref` (when one could be read) and a stable [`ErrorCode`]. Outbound
//! frames are [`ServerFrame`]s. docs/PROTOCOL.md is the prose form of this module.

use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use uuid::Uuid;

use crate::topic::Topic;

/// A decoded client command. `reference` is the optional `ref` the reply echoes
/// (a JSON string or number, echoed verbatim).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Subscribe {
        topic: Topic,
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
    Subscribed {
        topic: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
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
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: &str) -> Result<Command, ProtocolError> {
        decode_command(v, Topic::MAX_LEN)
    }

    #[test]
    fn decodes_each_command() {
        assert_eq!(
            decode(r#"{"action":"subscribe","topic":"order:123","ref":"1"}"#).unwrap(),
            Command::Subscribe {
                topic: Topic::parse("order:123").unwrap(),
                reference: Some(json!("1"))
            }
        );
        assert!(matches!(
            decode(r#"{"action":"unsubscribe","topic":"a"}"#),
            Ok(Command::Unsubscribe {
                reference: None,
                ..
            })
        ));
        assert!(matches!(
            decode(r#"{"action":"ping","ref":4}"#),
            Ok(Command::Ping { reference: Some(_) })
        ));
        let Command::Publish { message, .. } =
            decode(r#"{"action":"publish","topic":"chat:lobby","message":{"type":"chat","text":"hi"},"ref":"3"}"#).unwrap()
        else {
            panic!("expected publish")
        };
        assert_eq!(message.get("text"), Some(&json!("hi")));
        assert_eq!(
            decode(r#"{"action":"refresh","token":"a.b.c","ref":"r"}"#).unwrap(),
            Command::Refresh {
                token: "a.b.c".into(),
                reference: Some(json!("r"))
            }
        );
    }

    #[test]
    fn errors_carry_stable_codes_and_the_ref() {
        let cases: &[(&str, ErrorCode, Option<Value>)] = &[
            ("nope", ErrorCode::BadRequest, None),
            ("[1,2]", ErrorCode::BadRequest, None),
            (r#"{"ref":"9"}"#, ErrorCode::BadRequest, Some(json!("9"))),
            (
                r#"{"action":5,"ref":"9"}"#,
                ErrorCode::BadRequest,
                Some(json!("9")),
            ),
            (
                r#"{"action":"dance","ref":"9"}"#,
                ErrorCode::UnknownAction,
                Some(json!("9")),
            ),
            (
                r#"{"action":"subscribe","ref":"9"}"#,
                ErrorCode::BadRequest,
                Some(json!("9")),
            ),
            (
                r#"{"action":"subscribe","topic":7}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (
                r#"{"action":"subscribe","topic":"a b","ref":1}"#,
                ErrorCode::InvalidTopic,
                Some(json!(1)),
            ),
            (
                r#"{"action":"subscribe","topic":""}"#,
                ErrorCode::InvalidTopic,
                None,
            ),
            (
                r#"{"action":"publish","topic":"a"}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (
                r#"{"action":"publish","topic":"a","message":"hi"}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (
                r#"{"action":"publish","topic":"a","message":{"text":"hi"}}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (
                r#"{"action":"ping","ref":{"x":1}}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (
                r#"{"action":"refresh","ref":2}"#,
                ErrorCode::BadRequest,
                Some(json!(2)),
            ),
            (
                r#"{"action":"refresh","token":7}"#,
                ErrorCode::BadRequest,
                None,
            ),
            (
                r#"{"action":"refresh","token":""}"#,
                ErrorCode::BadRequest,
                None,
            ),
        ];
        for (input, code, reference) in cases {
            let e = decode(input).unwrap_err();
            assert_eq!(e.code, *code, "{input}");
            assert_eq!(&e.reference, reference, "{input}");
        }
    }

    #[test]
    fn peek_reference_reads_only_a_valid_ref() {
        assert_eq!(
            peek_reference(r#"{"action":"ping","ref":"a"}"#),
            Some(json!("a"))
        );
        assert_eq!(
            peek_reference(r#"{"ref":5,"x":[1,{"y":2}]}"#),
            Some(json!(5))
        );
        assert_eq!(peek_reference(r#"{"ref":{"x":1}}"#), None);
        assert_eq!(peek_reference(r#"[1]"#), None);
        assert_eq!(peek_reference("nope"), None);
        assert_eq!(
            peek_reference(r#"{"ref":1,"ref":2}"#),
            Some(json!(2)),
            "the last wins"
        );
        assert_eq!(peek_reference(r#"{"ref":1} trailing"#), None);
    }

    #[test]
    fn deep_nesting_is_a_bad_request_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(decode(&deep).unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn frames_serialize_as_documented() {
        let r = json!("1");
        let f = ServerFrame::Subscribed {
            topic: "order:123",
            reference: Some(&r),
        };
        assert_eq!(
            serde_json::from_str::<Value>(&f.to_json()).unwrap(),
            json!({"type":"subscribed","topic":"order:123","ref":"1"})
        );
        let f = ServerFrame::Published {
            reference: None,
            delivered: 2,
            relayed: false,
        };
        assert_eq!(
            serde_json::from_str::<Value>(&f.to_json()).unwrap(),
            json!({"type":"published","delivered":2,"relayed":false})
        );
        let e = ProtocolError::new(Some(json!(7)), ErrorCode::Forbidden, "no");
        assert_eq!(
            serde_json::from_str::<Value>(&e.frame().to_json()).unwrap(),
            json!({"type":"error","ref":7,"code":"forbidden","message":"no"})
        );
        let f = ServerFrame::ServerShutdown {
            message: "bye",
            timestamp: "t",
        };
        assert_eq!(
            serde_json::from_str::<Value>(&f.to_json()).unwrap()["type"],
            "server-shutdown"
        );
    }
}
