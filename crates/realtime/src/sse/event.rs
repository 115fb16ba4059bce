//! How frames become Server-Sent Events: each frame one event whose `data` is the
//! frame's JSON (no `event:` field, so `EventSource.onmessage` gets them all), the
//! `id:` cursor on the events that move a history topic's position, the heartbeat
//! comment, the opening `retry:` and the final `close` event.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use realtime_core::sse::{frame_position, topic_key, write_cursor};
use realtime_core::{CloseCode, Position, Topic};
use serde_json::json;

/// How long a browser waits before reconnecting a dropped stream.
pub(crate) const RETRY: Duration = Duration::from_secs(2);

/// The heartbeat: a comment line, which `EventSource` ignores.
pub(crate) const PING: &[u8] = b": ping\n\n";

/// What the stream starts with: the reconnection delay.
pub(crate) fn opening() -> Vec<u8> {
    format!("retry: {}\n\n", RETRY.as_millis()).into_bytes()
}

/// Writes `frame` as one event. Frames are single-line JSON; should one ever
/// hold a line break, each line becomes a `data:` line (the client joins them
/// back with `\n`, which JSON reads as the same whitespace).
pub(crate) fn data(out: &mut BytesMut, frame: &str) {
    // Scanned for every recipient: memchr's vectorized search, not a byte loop.
    if memchr::memchr2(b'\n', b'\r', frame.as_bytes()).is_some() {
        for line in frame.split(['\n', '\r']) {
            out.put_slice(b"data: ");
            out.put_slice(line.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        return;
    }
    out.put_slice(b"data: ");
    out.put_slice(frame.as_bytes());
    out.put_slice(b"\n\n");
}

/// Writes the final event: `event: close` with the close code and its reason.
pub(crate) fn close(out: &mut BytesMut, code: CloseCode) {
    let frame = json!({"type": "close", "code": code.code(), "reason": code.reason()});
    out.put_slice(b"event: close\n");
    data(out, &frame.to_string());
}

/// Bytes [`data`] writes for `frame` (without line breaks in it).
pub(crate) fn data_len(frame: &str) -> usize {
    frame.len() + 8
}

/// The positions of a stream's history topics, as its client has received them:
/// where it resumed from (its `Last-Event-ID`), then advanced by the frames as
/// they are written, written into the `id:` of the events that moved them. A
/// topic the stream has not announced yet keeps the position it resumed from, so
/// an id taken before its `subscribed` still resumes it.
#[derive(Debug)]
pub(crate) struct Positions {
    topics: Vec<Tracked>,
}

#[derive(Debug)]
struct Tracked {
    topic: Topic,
    key: u64,
    position: Option<Position>,
}

impl Positions {
    /// Each history topic with the position the client resumes it from, if any.
    pub(crate) fn new(topics: impl IntoIterator<Item = (Topic, Option<Position>)>) -> Self {
        Positions {
            topics: topics
                .into_iter()
                .map(|(topic, position)| Tracked {
                    key: topic_key(topic.as_str()),
                    topic,
                    position,
                })
                .collect(),
        }
    }

    /// Records the position `frame` states for one of these topics; returns
    /// whether it did.
    pub(crate) fn advance(&mut self, frame: &str) -> bool {
        let Some(stated) = frame_position(frame) else {
            return false;
        };
        let Some(tracked) = self
            .topics
            .iter_mut()
            .find(|t| t.topic.as_str() == stated.topic)
        else {
            return false;
        };
        match &mut tracked.position {
            // The same epoch, as nearly always: no copy.
            Some(known) if known.epoch == stated.epoch => known.offset = stated.offset,
            position => *position = Some(stated.position()),
        }
        true
    }

    /// Writes the `id:` line naming every known position.
    pub(crate) fn write_id(&self, out: &mut BytesMut) {
        out.put_slice(b"id: ");
        // Writing to a BytesMut cannot fail.
        let _ = write_cursor(
            out,
            self.topics
                .iter()
                .filter_map(|t| Some((t.key, t.position.as_ref()?))),
        );
        out.put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use realtime_core::history::with_position;
    use realtime_core::sse::Cursor;

    use super::*;

    fn text(out: BytesMut) -> String {
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn a_frame_is_one_data_event() {
        let mut out = BytesMut::new();
        data(&mut out, r#"{"type":"n"}"#);
        assert_eq!(out.len(), data_len(r#"{"type":"n"}"#));
        assert_eq!(text(out), "data: {\"type\":\"n\"}\n\n");
        let mut out = BytesMut::new();
        data(&mut out, "{\"a\":1,\r\n\"b\":2}");
        assert_eq!(text(out), "data: {\"a\":1,\ndata: \ndata: \"b\":2}\n\n");
    }

    #[test]
    fn the_close_event_names_the_code_and_reason() {
        let mut out = BytesMut::new();
        close(&mut out, CloseCode::TokenExpired);
        assert_eq!(
            text(out),
            "event: close\ndata: {\"code\":3005,\"reason\":\"token expired\",\"type\":\"close\"}\n\n"
        );
        assert_eq!(opening(), b"retry: 2000\n\n");
    }

    #[test]
    fn the_id_carries_every_known_position() {
        let a = Topic::parse("chat:a").unwrap();
        let b = Topic::parse("chat:b").unwrap();
        let mut positions = Positions::new([(a.clone(), None), (b.clone(), None)]);
        assert!(!positions.advance(r#"{"type":"welcome"}"#));
        assert!(!positions.advance(&with_position(r#"{"topic":"other"}"#, 1, "e")));
        assert!(positions.advance(&with_position(r#"{"topic":"chat:a"}"#, 7, "ea")));
        let mut out = BytesMut::new();
        positions.write_id(&mut out);
        let line = text(out);
        let cursor = Cursor::decode(line.strip_prefix("id: ").unwrap().trim_end()).unwrap();
        assert_eq!(cursor.len(), 1, "only a's position is known: {line}");
        assert!(positions.advance(&with_position(r#"{"topic":"chat:b"}"#, 2, "eb")));
        let mut out = BytesMut::new();
        positions.write_id(&mut out);
        let line = text(out);
        let cursor = Cursor::decode(line.strip_prefix("id: ").unwrap().trim_end()).unwrap();
        let at = |offset: u64, epoch: &str| Position {
            offset,
            epoch: epoch.into(),
        };
        assert_eq!(cursor.position(topic_key(a.as_str())), Some(&at(7, "ea")));
        assert_eq!(cursor.position(topic_key(b.as_str())), Some(&at(2, "eb")));
    }

    #[test]
    fn a_topic_keeps_where_it_resumed_from_until_its_frames_move_it() {
        let a = Topic::parse("chat:a").unwrap();
        let b = Topic::parse("chat:b").unwrap();
        let at = |offset: u64, epoch: &str| Position {
            offset,
            epoch: epoch.into(),
        };
        let mut positions = Positions::new([
            (a.clone(), Some(at(3, "ea"))),
            (b.clone(), Some(at(5, "eb"))),
        ]);
        assert!(positions.advance(&with_position(r#"{"topic":"chat:a"}"#, 4, "ea")));
        let mut out = BytesMut::new();
        positions.write_id(&mut out);
        let line = text(out);
        let cursor = Cursor::decode(line.strip_prefix("id: ").unwrap().trim_end()).unwrap();
        assert_eq!(cursor.position(topic_key(a.as_str())), Some(&at(4, "ea")));
        assert_eq!(
            cursor.position(topic_key(b.as_str())),
            Some(&at(5, "eb")),
            "b was not announced yet: still where it resumed from"
        );
        // A new epoch replaces the one held.
        assert!(positions.advance(&with_position(r#"{"topic":"chat:a"}"#, 1, "ez")));
        let mut out = BytesMut::new();
        positions.write_id(&mut out);
        let line = text(out);
        let cursor = Cursor::decode(line.strip_prefix("id: ").unwrap().trim_end()).unwrap();
        assert_eq!(cursor.position(topic_key(a.as_str())), Some(&at(1, "ez")));
    }
}
