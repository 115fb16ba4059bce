//! What an SSE request asks for: its query string (`token`, repeated `topic`,
//! `last_event_id`), read from the raw query because a form decoder into a
//! struct cannot keep repeated keys, and its `Last-Event-ID` header.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use realtime_core::sse::{Cursor, topic_key};
use realtime_core::{Position, Topic};

/// Most `topic` parameters one request may carry.
pub(crate) const MAX_TOPIC_PARAMS: usize = 64;

/// The query of an SSE request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamQuery {
    pub(crate) token: Option<String>,
    /// The `topic` values in order, at most [`MAX_TOPIC_PARAMS`].
    pub(crate) topics: Vec<String>,
    /// More `topic` parameters than that were given.
    pub(crate) too_many_topics: bool,
    pub(crate) last_event_id: Option<String>,
}

impl StreamQuery {
    /// Reads an `application/x-www-form-urlencoded` query (`+` is a space: a
    /// topic with `+` in it is written `%2B`). The first `token` and
    /// `last_event_id` count; other keys are ignored.
    pub(crate) fn parse(raw: &str) -> StreamQuery {
        let mut query = StreamQuery::default();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            match &*key {
                "topic" if query.topics.len() < MAX_TOPIC_PARAMS => {
                    query.topics.push(value.into_owned())
                }
                "topic" => query.too_many_topics = true,
                "token" if query.token.is_none() => query.token = Some(value.into_owned()),
                "last_event_id" if query.last_event_id.is_none() => {
                    query.last_event_id = Some(value.into_owned())
                }
                _ => {}
            }
        }
        query
    }
}

/// The `Last-Event-ID` header, alone (extracting every header would copy them all).
pub(crate) struct LastEventId(pub(crate) Option<HeaderValue>);

static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(LastEventId(parts.headers.get(&LAST_EVENT_ID).cloned()))
    }
}

/// Where a stream resumes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// No last event id: every history topic starts from its current position.
    Fresh,
    /// The cursor of the last event the client received.
    From(Cursor),
    /// A last event id this server cannot read: each history topic says it did
    /// not recover (`other_epoch`), as for a position of a lost history.
    Unreadable,
}

impl Resume {
    /// From the header (which wins) or the `last_event_id` parameter. An empty id
    /// is none, as `EventSource` means it.
    pub(crate) fn new(header: Option<&HeaderValue>, param: Option<&str>) -> Resume {
        let id = match header {
            Some(value) => match value.to_str() {
                Ok(text) => text,
                Err(_) => return Resume::Unreadable,
            },
            None => param.unwrap_or(""),
        };
        if id.is_empty() {
            return Resume::Fresh;
        }
        Cursor::decode(id).map_or(Resume::Unreadable, Resume::From)
    }

    /// The `since` a history topic subscribes with.
    pub(crate) fn since(&self, topic: &Topic) -> Option<Position> {
        match self {
            Resume::Fresh => None,
            Resume::From(cursor) => cursor.position(topic_key(topic.as_str())).cloned(),
            // No epoch is empty: this position recovers nothing.
            Resume::Unreadable => Some(Position {
                offset: 0,
                epoch: String::new(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use realtime_core::sse::encode_cursor;

    use super::*;

    #[test]
    fn repeated_topics_are_kept_in_order() {
        let q = StreamQuery::parse("topic=a&token=t1&topic=b%3Ac&topic=x%2By&token=t2&other=1");
        assert_eq!(q.topics, ["a", "b:c", "x+y"]);
        assert_eq!(q.token.as_deref(), Some("t1"));
        assert!(!q.too_many_topics);
        assert_eq!(StreamQuery::parse(""), StreamQuery::default());
        let many: Vec<String> = (0..=MAX_TOPIC_PARAMS)
            .map(|i| format!("topic=t{i}"))
            .collect();
        let q = StreamQuery::parse(&many.join("&"));
        assert_eq!(q.topics.len(), MAX_TOPIC_PARAMS);
        assert!(q.too_many_topics);
    }

    #[test]
    fn the_header_wins_and_bad_ids_are_unreadable() {
        let at = Position {
            offset: 4,
            epoch: "e".into(),
        };
        let topic = Topic::parse("chat:a").unwrap();
        let id = encode_cursor([(topic_key("chat:a"), &at)]);
        let header = HeaderValue::from_str(&id).unwrap();
        let resume = Resume::new(Some(&header), Some("garbage"));
        assert_eq!(resume.since(&topic), Some(at.clone()));
        assert_eq!(resume.since(&Topic::parse("chat:b").unwrap()), None);
        assert_eq!(Resume::new(None, Some(&id)).since(&topic), Some(at));
        assert_eq!(Resume::new(None, None), Resume::Fresh);
        assert_eq!(Resume::new(None, Some("")), Resume::Fresh);
        let bad = Resume::new(None, Some("garbage"));
        assert_eq!(bad, Resume::Unreadable);
        assert_eq!(bad.since(&topic).map(|p| p.epoch), Some(String::new()));
        let binary = HeaderValue::from_bytes(b"r1\xff").unwrap();
        assert_eq!(Resume::new(Some(&binary), None), Resume::Unreadable);
    }
}
