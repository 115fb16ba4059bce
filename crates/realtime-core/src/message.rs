//! Application messages: a JSON object with a string `type`, stamped and serialized
//! exactly once before fan-out.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::topic::Topic;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("message must be a JSON object")]
    NotAnObject,
    #[error("message must have a string `type`")]
    MissingType,
    #[error(
        "`topic` is set by the server on topic messages only; send to the topic route or remove it"
    )]
    ReservedTopic,
    #[error(
        "`offset` and `epoch` are set by the server on history topics; remove them from the message"
    )]
    ReservedPosition,
}

impl MessageError {
    /// Stable code for API error bodies.
    pub const fn code(&self) -> &'static str {
        match self {
            MessageError::InvalidJson(_) => "invalid_json",
            MessageError::NotAnObject
            | MessageError::MissingType
            | MessageError::ReservedTopic
            | MessageError::ReservedPosition => "invalid_message",
        }
    }
}

/// A message ready to be written to any number of sockets: the JSON text, built once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMessage(String);

impl PreparedMessage {
    /// Validates `value`, adds `timestamp` when absent and, for topic messages, sets
    /// `topic` (overwriting any `topic` the sender supplied), then serializes. A
    /// message for any other route may not carry `topic`, so a receiver can trust
    /// that a message with `topic` came through that topic.
    pub fn new(value: Value, timestamp: &str, topic: Option<&Topic>) -> Result<Self, MessageError> {
        Self::new_with(value, timestamp, topic, false)
    }

    /// As [`PreparedMessage::new`]; with `history`, the message is for a history
    /// topic and may not carry `offset` or `epoch` (the server assigns them).
    pub fn new_with(
        value: Value,
        timestamp: &str,
        topic: Option<&Topic>,
        history: bool,
    ) -> Result<Self, MessageError> {
        match value {
            Value::Object(map) => Self::from_map_with(map, timestamp, topic, history),
            _ => Err(MessageError::NotAnObject),
        }
    }

    /// As [`PreparedMessage::new`], from raw JSON bytes (an HTTP body).
    pub fn from_slice(
        body: &[u8],
        timestamp: &str,
        topic: Option<&Topic>,
    ) -> Result<Self, MessageError> {
        Self::from_slice_with(body, timestamp, topic, false)
    }

    /// As [`PreparedMessage::from_slice`], for a history topic when `history`.
    pub fn from_slice_with(
        body: &[u8],
        timestamp: &str,
        topic: Option<&Topic>,
        history: bool,
    ) -> Result<Self, MessageError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| MessageError::InvalidJson(e.to_string()))?;
        Self::new_with(value, timestamp, topic, history)
    }

    /// As [`PreparedMessage::new`], from an already decoded object.
    pub fn from_map(
        map: Map<String, Value>,
        timestamp: &str,
        topic: Option<&Topic>,
    ) -> Result<Self, MessageError> {
        Self::from_map_with(map, timestamp, topic, false)
    }

    /// As [`PreparedMessage::from_map`], for a history topic when `history`.
    pub fn from_map_with(
        mut map: Map<String, Value>,
        timestamp: &str,
        topic: Option<&Topic>,
        history: bool,
    ) -> Result<Self, MessageError> {
        if !matches!(map.get("type"), Some(Value::String(_))) {
            return Err(MessageError::MissingType);
        }
        if history && (map.contains_key("offset") || map.contains_key("epoch")) {
            return Err(MessageError::ReservedPosition);
        }
        if !map.contains_key("timestamp") {
            map.insert("timestamp".into(), Value::String(timestamp.to_owned()));
        }
        match topic {
            Some(topic) => {
                map.insert("topic".into(), Value::String(topic.as_str().to_owned()));
            }
            None if map.contains_key("topic") => return Err(MessageError::ReservedTopic),
            None => {}
        }
        // Serializing a Map of Values cannot fail (keys are strings, no custom impls).
        Ok(PreparedMessage(
            serde_json::to_string(&map).unwrap_or_else(|_| String::from("{}")),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// RFC 3339 UTC with exactly three fractional digits, e.g. `2026-11-23T09:27:08.123Z`.
/// The fixed width makes these strings sort in time order.
pub fn rfc3339_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TS: &str = "2026-11-23T09:00:00Z";

    fn parsed(m: &PreparedMessage) -> Value {
        serde_json::from_str(m.as_str()).unwrap()
    }

    #[test]
    fn adds_timestamp_when_absent_only() {
        let m = PreparedMessage::new(json!({"type":"n","x":1}), TS, None).unwrap();
        assert_eq!(parsed(&m), json!({"type":"n","x":1,"timestamp":TS}));
        let m = PreparedMessage::new(json!({"type":"n","timestamp":"mine"}), TS, None).unwrap();
        assert_eq!(parsed(&m)["timestamp"], "mine");
    }

    #[test]
    fn topic_messages_carry_their_topic() {
        assert_eq!(
            PreparedMessage::new(json!({"type":"n","topic":"order:1"}), TS, None),
            Err(MessageError::ReservedTopic),
            "only the topic route sets `topic`"
        );
        let topic = Topic::parse("order:1").unwrap();
        let m =
            PreparedMessage::new(json!({"type":"n","topic":"spoof"}), TS, Some(&topic)).unwrap();
        assert_eq!(parsed(&m)["topic"], "order:1");
    }

    #[test]
    fn history_topic_messages_may_not_carry_a_position() {
        let topic = Topic::parse("feed:1").unwrap();
        for field in ["offset", "epoch"] {
            let mut m = json!({"type":"n"});
            m[field] = json!(1);
            assert_eq!(
                PreparedMessage::new_with(m.clone(), TS, Some(&topic), true),
                Err(MessageError::ReservedPosition)
            );
            assert!(PreparedMessage::new_with(m, TS, Some(&topic), false).is_ok());
        }
        assert_eq!(MessageError::ReservedPosition.code(), "invalid_message");
    }

    #[test]
    fn rejects_non_objects_and_missing_type() {
        assert_eq!(
            PreparedMessage::new(json!([1]), TS, None),
            Err(MessageError::NotAnObject)
        );
        assert_eq!(
            PreparedMessage::new(json!({"x":1}), TS, None),
            Err(MessageError::MissingType)
        );
        assert_eq!(
            PreparedMessage::new(json!({"type":5}), TS, None),
            Err(MessageError::MissingType)
        );
        assert_eq!(
            PreparedMessage::from_slice(b"{nope", TS, None)
                .unwrap_err()
                .code(),
            "invalid_json"
        );
    }

    #[test]
    fn formats_utc_millis() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339_millis(t), "2027-01-15T08:00:00.123Z");
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(rfc3339_millis(t), "2027-01-15T08:00:00.000Z");
        let parsed = OffsetDateTime::parse(
            &rfc3339_millis(t),
            &time::format_description::well_known::Rfc3339,
        );
        assert_eq!(parsed.unwrap(), t);
    }
}
