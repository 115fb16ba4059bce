//! Topic names: the documented character set and length limit, checked once.
//!
//! A topic is 1 to [`Topic::MAX_LEN`] bytes of ASCII letters, digits and
//! `_ - : . @ = +`. The `:` separates namespace segments (`order:123`,
//! `user:42:notifications`). `/`, spaces, control characters and anything non-ASCII
//! are rejected so a topic is always safe in a URL path segment, a log line and a
//! Redis key.

use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A validated topic name. Cheap to clone (shared string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Topic(Arc<str>);

/// Why a topic name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTopic {
    #[error("topic is empty")]
    Empty,
    #[error("topic is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("topic contains a character outside [A-Za-z0-9_-:.@=+] at byte {position}")]
    BadCharacter { position: usize },
}

impl Topic {
    /// Longest accepted topic name, in bytes (Centrifugo's limit).
    pub const MAX_LEN: usize = 255;

    /// Validates `name` against the default maximum length.
    pub fn parse(name: &str) -> Result<Topic, InvalidTopic> {
        Self::parse_with_max(name, Self::MAX_LEN)
    }

    /// Validates `name` with a configured maximum length.
    pub fn parse_with_max(name: &str, max_len: usize) -> Result<Topic, InvalidTopic> {
        if name.is_empty() {
            return Err(InvalidTopic::Empty);
        }
        if name.len() > max_len {
            return Err(InvalidTopic::TooLong { max: max_len });
        }
        if let Some(position) = name.bytes().position(|b| !is_topic_byte(b)) {
            return Err(InvalidTopic::BadCharacter { position });
        }
        Ok(Topic(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string behind the name.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.' | b'@' | b'=' | b'+')
}

/// The topic character set as a regular expression, for schemas (the same set
/// [`is_topic_byte`] accepts).
pub const TOPIC_PATTERN: &str = "^[A-Za-z0-9_\\-:.@=+]+$";

/// A topic in an OpenAPI document: a string of the accepted characters, 1 to
/// [`Topic::MAX_LEN`] bytes (all ASCII, so bytes are characters).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Topic {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A topic name: 1 to `max_topic_length` (default 255) ASCII letters, digits \
                 and `_ - : . @ = +`; `:` separates namespace segments.",
            ))
            .min_length(Some(1))
            .max_length(Some(Topic::MAX_LEN))
            .pattern(Some(TOPIC_PATTERN))
            .examples(["chat:lobby"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Topic {}

/// Deserializing validates, so a topic from the wire is as good as a parsed one.
impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Topic::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_characters() {
        for ok in [
            "order:123",
            "user:42:notifications",
            "a",
            "chat.lobby",
            "x_y-z@h=1+2",
        ] {
            assert_eq!(Topic::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Topic::parse(""), Err(InvalidTopic::Empty));
        assert_eq!(
            Topic::parse("a/b"),
            Err(InvalidTopic::BadCharacter { position: 1 })
        );
        for bad in ["a b", "a\nb", "a\u{0}b", "é", "a#b", "$x", "a*"] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn enforces_length_limit() {
        let max = "a".repeat(Topic::MAX_LEN);
        assert!(Topic::parse(&max).is_ok());
        let long = "a".repeat(Topic::MAX_LEN + 1);
        assert_eq!(
            Topic::parse(&long),
            Err(InvalidTopic::TooLong {
                max: Topic::MAX_LEN
            })
        );
        assert!(Topic::parse_with_max("abcd", 3).is_err());
    }
}
