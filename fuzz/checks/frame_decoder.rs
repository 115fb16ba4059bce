//! What must hold for any inbound text frame: the checks of the `frame_decoder` fuzz
//! target, shared with the seed-replay test `crates/realtime-core/tests/fuzz_seeds.rs`
//! (both include this file with `#[path]`, so the two can never drift apart).
//!
//! [`check`] panics when an invariant breaks; a panic inside the decoder itself is
//! of course a failure too.

use realtime_core::Topic;
use realtime_core::protocol::{Command, ProtocolError, decode_command, peek_reference};
use serde_json::Value;

/// Topic length limits every frame is decoded with: the default, a small configured
/// one, and the two extremes.
pub const MAX_TOPIC_LENS: [usize; 4] = [Topic::MAX_LEN, 8, 0, usize::MAX];

/// An error message goes back to the client in an `error` frame: it stays short.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// Runs every check on one fuzz input.
pub fn check(data: &[u8]) {
    // The WebSocket layer refuses a text frame that is not UTF-8 before the
    // decoder ever sees it, so only UTF-8 reaches `decode_command`.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for max in MAX_TOPIC_LENS {
        match decode_command(text, max) {
            Ok(command) => check_command(&command, max),
            Err(error) => check_error(text, &error),
        }
    }
    check_topic(text, Topic::MAX_LEN);
    check_topic(text, 8);
    check_peeked_reference(text);
}

/// The `ref` read from a frame refused unread (rate limit) is a string or a number,
/// and whenever the full decoder accepts the frame it reads the same `ref`.
fn check_peeked_reference(text: &str) {
    let peeked = peek_reference(text);
    check_reference(peeked.as_ref());
    let decoded = match decode_command(text, Topic::MAX_LEN) {
        Ok(Command::Subscribe { reference, .. })
        | Ok(Command::History { reference, .. })
        | Ok(Command::Unsubscribe { reference, .. })
        | Ok(Command::Publish { reference, .. })
        | Ok(Command::Ping { reference })
        | Ok(Command::Refresh { reference, .. })
        | Ok(Command::Presence { reference, .. })
        | Ok(Command::PresenceStats { reference, .. }) => reference,
        Err(_) => return,
    };
    assert_eq!(peeked, decoded, "peek_reference disagrees with the decoder");
}

fn check_command(command: &Command, max: usize) {
    match command {
        Command::Subscribe {
            topic,
            since,
            reference,
        }
        | Command::History {
            topic,
            since,
            reference,
            ..
        } => {
            check_decoded_topic(topic, max);
            if let Some(since) = since {
                assert!(
                    since.epoch.len() <= realtime_core::protocol::MAX_EPOCH_LEN,
                    "a decoded epoch is bounded: {since:?}"
                );
            }
            check_reference(reference.as_ref());
        }
        Command::Unsubscribe { topic, reference }
        | Command::PresenceStats { topic, reference }
        | Command::Presence {
            topic, reference, ..
        } => {
            check_decoded_topic(topic, max);
            check_reference(reference.as_ref());
        }
        Command::Publish {
            topic,
            message,
            reference,
        } => {
            check_decoded_topic(topic, max);
            assert!(
                matches!(message.get("type"), Some(Value::String(_))),
                "a published message must have a string `type`: {message:?}"
            );
            check_reference(reference.as_ref());
        }
        Command::Ping { reference } => check_reference(reference.as_ref()),
        Command::Refresh { token, reference } => {
            assert!(!token.is_empty(), "a refresh command carries a token");
            check_reference(reference.as_ref());
        }
    }
}

fn check_decoded_topic(topic: &Topic, max: usize) {
    let name = topic.as_str();
    assert!(
        !name.is_empty() && name.len() <= max,
        "decoded topic of {} bytes with max {max}",
        name.len()
    );
    assert!(
        name.bytes().all(is_documented_topic_byte),
        "decoded topic {name:?} has a byte outside the documented set"
    );
}

fn check_reference(reference: Option<&Value>) {
    assert!(
        matches!(reference, None | Some(Value::String(_) | Value::Number(_))),
        "`ref` must be echoed only as a string or a number: {reference:?}"
    );
}

fn check_error(text: &str, error: &ProtocolError) {
    assert!(
        error.message.len() < MAX_ERROR_MESSAGE,
        "error message of {} bytes",
        error.message.len()
    );
    check_reference(error.reference.as_ref());
    let frame = error.frame().to_json();
    let parsed: Value = serde_json::from_str(&frame).expect("an error frame is valid JSON");
    assert_eq!(parsed["type"], "error", "{frame}");
    assert_eq!(parsed["code"], error.code.as_str(), "{frame}");
    assert_eq!(parsed["message"].as_str(), Some(error.message.as_str()));
    // A refresh token must never be echoed back (it would end up in logs and
    // traces of the client). Only JWT-shaped tokens are checked: a short word could
    // match the fixed text of a message by chance.
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text)
        && obj.get("action").and_then(Value::as_str) == Some("refresh")
        && let Some(token) = obj.get("token").and_then(Value::as_str)
        && looks_like_jwt(token)
    {
        assert!(
            !frame.contains(token),
            "the error frame echoes the refresh token: {frame}"
        );
    }
}

/// `Topic::parse_with_max` against the documented rule, stated independently:
/// 1 to `max` bytes of ASCII letters, digits and `_ - : . @ = +`.
fn check_topic(text: &str, max: usize) {
    let parsed = Topic::parse_with_max(text, max);
    let valid = !text.is_empty() && text.len() <= max && text.bytes().all(is_documented_topic_byte);
    match &parsed {
        Ok(topic) => {
            assert!(valid, "{text:?} accepted as a topic with max {max}");
            assert_eq!(topic.as_str(), text);
        }
        Err(e) => {
            assert!(!valid, "{text:?} rejected as a topic with max {max}: {e}");
            assert!(e.to_string().len() < MAX_ERROR_MESSAGE);
        }
    }
    if max == Topic::MAX_LEN {
        // Deserializing validates exactly like parsing.
        let from_json = serde_json::from_value::<Topic>(Value::String(text.to_owned()));
        assert_eq!(from_json.is_ok(), parsed.is_ok(), "{text:?}");
    }
}

fn is_documented_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-:.@=+".contains(&b)
}

/// Three dot-separated base64url segments (the signature may be empty), 16+ bytes.
fn looks_like_jwt(s: &str) -> bool {
    let segments: Vec<&str> = s.split('.').collect();
    s.len() >= 16
        && segments.len() == 3
        && !segments[0].is_empty()
        && !segments[1].is_empty()
        && s.bytes()
            .all(|b| b == b'.' || b == b'-' || b == b'_' || b.is_ascii_alphanumeric())
}
