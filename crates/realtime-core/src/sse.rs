//! The pure rules of the SSE transport's event ids: the cursor that carries the
//! position of every history topic of a stream (so one `Last-Event-ID` resumes
//! them all), and the look at a serialized frame that finds the position it moves.
//!
//! A cursor is printable ASCII without spaces, CR, LF or NUL:
//! `r1,<key>:<offset>:<epoch>,<key>:<offset>:<epoch>…`, one entry per history
//! topic whose position is known, where `key` is 16 hex digits naming the topic
//! ([`topic_key`]), `offset` a decimal number and `epoch` the epoch with every
//! byte outside `[A-Za-z0-9_.-]` percent-encoded. Each entry is at most
//! [`MAX_ENTRY_LEN`] bytes, so a cursor is bounded by the stream's topic count.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;

use crate::history::Position;
use crate::protocol::MAX_EPOCH_LEN;

/// The first field of every cursor: the format's version.
pub const CURSOR_VERSION: &str = "r1";

/// Longest entry: a key, the longest offset, the longest epoch with every byte
/// escaped, and two separators (plus the comma before it).
pub const MAX_ENTRY_LEN: usize = 1 + 16 + 1 + 20 + 1 + 3 * MAX_EPOCH_LEN;

/// Longest cursor [`Cursor::decode`] reads; a longer `Last-Event-ID` is unreadable.
pub const MAX_CURSOR_LEN: usize = 64 * 1024;

/// Epoch bytes written as they are; every other byte is `%XX`.
const EPOCH_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

/// The name of a topic in a cursor: its 64-bit FNV-1a hash. Fixed forever (a
/// cursor outlives the node that wrote it), and short whatever the topic's length.
pub fn topic_key(topic: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    topic.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Writes the cursor for `positions` (each topic's key and position), in order.
pub fn encode_cursor<'a>(positions: impl IntoIterator<Item = (u64, &'a Position)>) -> String {
    let mut out = String::from(CURSOR_VERSION);
    for (key, position) in positions {
        use std::fmt::Write;
        let epoch = utf8_percent_encode(&position.epoch, EPOCH_ESCAPES);
        // Writing to a String cannot fail.
        let _ = write!(out, ",{key:016x}:{}:{epoch}", position.offset);
    }
    out
}

/// A decoded cursor: the positions it names, by topic key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    entries: Vec<(u64, Position)>,
}

impl Cursor {
    /// Reads a cursor; `None` when `text` is not one this format writes (another
    /// version, a malformed entry, an epoch longer than a client may send back,
    /// or more than [`MAX_CURSOR_LEN`] bytes).
    pub fn decode(text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR_LEN {
            return None;
        }
        let mut fields = text.split(',');
        if fields.next()? != CURSOR_VERSION {
            return None;
        }
        let entries = fields.map(entry).collect::<Option<Vec<_>>>()?;
        Some(Cursor { entries })
    }

    /// The position the cursor holds for `key` (the first, if named twice).
    pub fn position(&self, key: u64) -> Option<&Position> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn entry(field: &str) -> Option<(u64, Position)> {
    let mut parts = field.splitn(3, ':');
    let key = parts.next()?;
    if key.len() != 16 {
        return None;
    }
    let key = u64::from_str_radix(key, 16).ok()?;
    let offset = parts.next()?;
    if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset = offset.parse().ok()?;
    let epoch = percent_decode_str(parts.next()?).decode_utf8().ok()?;
    if epoch.is_empty() || epoch.len() > MAX_EPOCH_LEN {
        return None;
    }
    Some((
        key,
        Position {
            offset,
            epoch: epoch.into_owned(),
        },
    ))
}

/// A topic's position as a frame states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramePosition<'a> {
    pub topic: Cow<'a, str>,
    pub position: Position,
}

/// How a history publication's JSON starts (see [`crate::history::with_position`]).
const PUBLICATION_START: &str = r#"{"offset":"#;
/// How the frames that state a subscription's position start (serialized
/// [`crate::ServerFrame`]s name their `type` first).
const SUBSCRIBED_START: &str = r#"{"type":"subscribed","#;
const MISSED_START: &str = r#"{"type":"missed","#;

/// The topic position a serialized frame moves, if any: a history publication
/// (`offset`, `epoch` and `topic`), or a `subscribed` (unless `recovered`: its
/// replay moves the position) or `missed` frame with `offset` and `epoch`. Any other frame is told apart by its first bytes and not
/// parsed. The caller checks the topic: a message on a topic without history may
/// carry fields of these names too.
pub fn frame_position(frame: &str) -> Option<FramePosition<'_>> {
    if !(frame.starts_with(PUBLICATION_START)
        || frame.starts_with(SUBSCRIBED_START)
        || frame.starts_with(MISSED_START))
    {
        return None;
    }
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        topic: Option<Cow<'a, str>>,
        offset: Option<u64>,
        #[serde(borrow)]
        epoch: Option<Cow<'a, str>>,
        recovered: Option<bool>,
    }
    let peek: Peek<'_> = serde_json::from_str(frame).ok()?;
    if peek.recovered == Some(true) && frame.starts_with(SUBSCRIBED_START) {
        // A recovered subscribe states the top the replay that follows ends at:
        // the client is still at its `since` until the replay reaches it.
        return None;
    }
    Some(FramePosition {
        topic: peek.topic?,
        position: Position {
            offset: peek.offset?,
            epoch: peek.epoch?.into_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerFrame;
    use crate::history::with_position;
    use crate::protocol::MissedReason;

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn a_cursor_round_trips_every_topic() {
        let a = pos(17, "9f3a6c21d0e4b7a5");
        let b = pos(0, "odd epoch,with:separators%");
        let text = encode_cursor([(topic_key("chat:a"), &a), (topic_key("chat:b"), &b)]);
        assert!(text.starts_with("r1,"), "{text}");
        assert!(
            text.bytes().all(|c| c.is_ascii_graphic()),
            "printable, no spaces: {text}"
        );
        let cursor = Cursor::decode(&text).expect("decodes");
        assert_eq!(cursor.len(), 2);
        assert_eq!(cursor.position(topic_key("chat:a")), Some(&a));
        assert_eq!(cursor.position(topic_key("chat:b")), Some(&b));
        assert_eq!(cursor.position(topic_key("chat:c")), None);
        assert_eq!(Cursor::decode("r1"), Some(Cursor::default()));
    }

    #[test]
    fn entries_are_bounded() {
        let epoch = "\u{7f}".repeat(MAX_EPOCH_LEN);
        let longest = pos(u64::MAX, &epoch);
        let text = encode_cursor([(u64::MAX, &longest)]);
        assert_eq!(text.len(), CURSOR_VERSION.len() + MAX_ENTRY_LEN);
        assert_eq!(
            Cursor::decode(&text).unwrap().position(u64::MAX),
            Some(&longest)
        );
    }

    #[test]
    fn anything_else_is_unreadable() {
        let key = format!("{:016x}", topic_key("t"));
        for bad in [
            "",
            "42",
            "r2,0000000000000000:1:e",
            "r1,",
            "r1,zz:1:e",
            "r1,00000000000000000:1:e",
            &format!("r1,{key}"),
            &format!("r1,{key}:1"),
            &format!("r1,{key}::e"),
            &format!("r1,{key}:+1:e"),
            &format!("r1,{key}:-1:e"),
            &format!("r1,{key}:1.5:e"),
            &format!("r1,{key}:99999999999999999999999:e"),
            &format!("r1,{key}:1:"),
            &format!("r1,{key}:1:%ff"),
            &format!("r1,{key}:1:{}", "e".repeat(MAX_EPOCH_LEN + 1)),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
        let long = format!("r1{}", format!(",{key}:1:e").repeat(MAX_CURSOR_LEN / 10));
        assert_eq!(Cursor::decode(&long), None, "over the length bound");
    }

    #[test]
    fn topic_keys_are_fixed() {
        // FNV-1a 64 of the empty string and of "a": the published test vectors.
        assert_eq!(topic_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(topic_key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(topic_key("chat:a"), topic_key("chat:b"));
    }

    #[test]
    fn publications_and_position_frames_state_their_position() {
        let publication =
            with_position(r#"{"timestamp":"T","topic":"chat:a","type":"n"}"#, 18, "e1");
        assert_eq!(
            frame_position(&publication),
            Some(FramePosition {
                topic: "chat:a".into(),
                position: pos(18, "e1")
            })
        );
        let subscribed = ServerFrame::Subscribed {
            topic: "chat:a",
            reference: None,
            offset: Some(3),
            epoch: Some("e\"2"),
            recovered: Some(false),
            reason: None,
        }
        .to_json();
        assert_eq!(
            frame_position(&subscribed).map(|f| f.position),
            Some(pos(3, "e\"2"))
        );
        let missed = ServerFrame::Missed {
            topic: "chat:a",
            reason: MissedReason::HistoryLost,
            offset: Some(0),
            epoch: Some("e3"),
        }
        .to_json();
        assert_eq!(
            frame_position(&missed).map(|f| f.position),
            Some(pos(0, "e3"))
        );
    }

    #[test]
    fn other_frames_state_none() {
        let plain_subscribed = ServerFrame::Subscribed {
            topic: "room:1",
            reference: None,
            offset: None,
            epoch: None,
            recovered: None,
            reason: None,
        }
        .to_json();
        let bus_missed = ServerFrame::Missed {
            topic: "room:1",
            reason: MissedReason::BusReconnected,
            offset: None,
            epoch: None,
        }
        .to_json();
        // Recovered: the replay after it moves the position, from `since` on.
        let recovered = ServerFrame::Subscribed {
            topic: "chat:a",
            reference: None,
            offset: Some(9),
            epoch: Some("e1"),
            recovered: Some(true),
            reason: None,
        }
        .to_json();
        for frame in [
            plain_subscribed.as_str(),
            bus_missed.as_str(),
            recovered.as_str(),
            r#"{"type":"welcome","connection_id":"x","offset":1,"epoch":"e","topic":"t"}"#,
            r#"{"epoch":"e","offset":1,"topic":"t","type":"n"}"#,
            r#"{"offset":"one","epoch":"e","topic":"t"}"#,
            r#"{"offset":1,"epoch":"e"}"#,
            r#"{"offset":1,"#,
            "",
        ] {
            assert_eq!(frame_position(frame), None, "{frame}");
        }
    }
}
