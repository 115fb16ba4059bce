//! Topic history positions and the rules over them: what a client's position can
//! recover, how a node orders what it receives, how a publication's position is
//! written into its JSON, and how a history publication travels between nodes.
//!
//! A history topic numbers its publications: `offset` grows by one per publication,
//! starting at 1, within an `epoch` — an opaque string that changes whenever the
//! topic's history is lost or reset, so an old offset is never taken for a new one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How much history a namespace keeps per topic. Built by [`HistoryLimits::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryLimits {
    size: u32,
    ttl: Duration,
}

/// Limits that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryLimitsError {
    #[error("history_size must be between 1 and {max}, not {size}")]
    Size { size: u64, max: u32 },
    #[error("history_ttl must be between 1s and {max_days} days")]
    Ttl { max_days: u64 },
    #[error("history_size and history_ttl must be set together")]
    Incomplete,
}

impl HistoryLimits {
    /// Most publications kept per topic.
    pub const MAX_SIZE: u32 = 100_000;
    /// Longest time a topic's history outlives its last publication.
    pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
    /// A topic's position (epoch and top offset) is kept at least this long after
    /// its last publication, even when the publications expired sooner, so a
    /// client that was away while nothing was published still recovers.
    pub const MIN_POSITION_TTL: Duration = Duration::from_secs(24 * 3600);

    pub fn new(size: u64, ttl: Duration) -> Result<Self, HistoryLimitsError> {
        if size == 0 || size > u64::from(Self::MAX_SIZE) {
            return Err(HistoryLimitsError::Size {
                size,
                max: Self::MAX_SIZE,
            });
        }
        if ttl < Duration::from_secs(1) || ttl > Self::MAX_TTL {
            return Err(HistoryLimitsError::Ttl {
                max_days: Self::MAX_TTL.as_secs() / 86_400,
            });
        }
        Ok(HistoryLimits {
            size: size as u32,
            ttl,
        })
    }

    /// From the two optional configuration values: neither means no history.
    pub fn from_options(
        size: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<Option<Self>, HistoryLimitsError> {
        match (size, ttl) {
            (None, None) => Ok(None),
            (Some(size), Some(ttl)) => Self::new(size, ttl).map(Some),
            _ => Err(HistoryLimitsError::Incomplete),
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long the position outlives the last publication: the longer of
    /// `ttl` and [`MIN_POSITION_TTL`](Self::MIN_POSITION_TTL).
    pub fn position_ttl(&self) -> Duration {
        self.ttl.max(Self::MIN_POSITION_TTL)
    }
}

/// Where a client or a node stands in a topic's history: the last offset it has,
/// in an epoch. Offset 0 means "before the first publication".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What a store holds for a topic right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamState {
    pub epoch: String,
    /// The offset of the latest publication (0: none yet in this epoch).
    pub top: u64,
    /// The lowest offset still held; `top + 1` when nothing is held.
    pub first: u64,
}

impl StreamState {
    /// The current position: the top offset in the current epoch.
    pub fn position(&self) -> Position {
        Position {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

/// Whether everything after a position can still be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Every publication after the position is held: replay them.
    Recovered,
    /// It cannot: deliver from the current position, and say so.
    NotRecovered(Unrecoverable),
}

/// Why a position cannot be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unrecoverable {
    /// The topic keeps no history.
    NoHistory,
    /// The position belongs to another epoch: the history was lost or reset.
    OtherEpoch,
    /// Publications after the position were trimmed or expired.
    Trimmed,
    /// The position is ahead of the topic's top offset: not one this epoch gave out.
    AheadOfTop,
}

impl Unrecoverable {
    pub const fn as_str(self) -> &'static str {
        match self {
            Unrecoverable::NoHistory => "no_history",
            Unrecoverable::OtherEpoch => "other_epoch",
            Unrecoverable::Trimmed => "trimmed",
            Unrecoverable::AheadOfTop => "ahead_of_top",
        }
    }
}

/// Can a client at `since` receive every publication after it from `state`?
pub fn recovery(since: &Position, state: &StreamState) -> Recovery {
    if since.epoch != state.epoch {
        return Recovery::NotRecovered(Unrecoverable::OtherEpoch);
    }
    if since.offset > state.top {
        return Recovery::NotRecovered(Unrecoverable::AheadOfTop);
    }
    // Needed: since+1 ..= top. Held: first ..= top.
    if since.offset.saturating_add(1) < state.first {
        return Recovery::NotRecovered(Unrecoverable::Trimmed);
    }
    Recovery::Recovered
}

/// What a node does with a publication it receives for a topic it tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The next one: deliver it.
    Deliver,
    /// Delivered before (a replayed or re-read copy): drop it.
    Duplicate,
    /// Publications `from ..= to` are missing before it: read them first.
    Gap { from: u64, to: u64 },
    /// It belongs to another epoch: the history was lost or reset.
    NewEpoch,
}

/// Orders a received publication at `incoming` against the last one delivered.
pub fn admit(last: &Position, incoming: &Position) -> Admission {
    if incoming.epoch != last.epoch {
        return Admission::NewEpoch;
    }
    if incoming.offset <= last.offset {
        Admission::Duplicate
    } else if incoming.offset == last.offset + 1 {
        Admission::Deliver
    } else {
        Admission::Gap {
            from: last.offset + 1,
            to: incoming.offset - 1,
        }
    }
}

/// Most publications one `history` command or request returns.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// The page size a client asked for, capped at [`MAX_HISTORY_LIMIT`]; absent: the cap.
pub fn history_limit(requested: Option<u64>) -> usize {
    requested.map_or(MAX_HISTORY_LIMIT, |n| {
        usize::try_from(n).map_or(MAX_HISTORY_LIMIT, |n| n.min(MAX_HISTORY_LIMIT))
    })
}

/// Writes `"offset"` and `"epoch"` into a publication's JSON object (as the first
/// members). `payload` is a serialized [`crate::PreparedMessage`]: an object.
pub fn with_position(payload: &str, offset: u64, epoch: &str) -> String {
    let rest = payload.strip_prefix('{').unwrap_or(payload);
    let epoch = serde_json::to_string(epoch).unwrap_or_else(|_| String::from("\"\""));
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"offset\":{offset},\"epoch\":{epoch}{sep}{rest}")
}

/// The first byte of a history publication on the bus. 0xC1 is never used by
/// MessagePack, so it cannot start an ordinary [`crate::Envelope`].
pub const PUBLICATION_MARK: u8 = 0xC1;

/// A history publication as it travels between nodes:
/// `0xC1 <offset> ' ' <epoch> ' ' <topic> '\n' <payload>`, where `payload` is the
/// publication's JSON without its position. A Redis script builds the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePublication<'a> {
    pub offset: u64,
    pub epoch: &'a str,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

impl<'a> WirePublication<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.topic.len() + 40);
        out.push(PUBLICATION_MARK);
        out.extend_from_slice(self.offset.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.epoch.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.topic.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(self.payload);
        out
    }

    /// `None` when `bytes` is not a history publication (an ordinary envelope) or
    /// is malformed.
    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(&[PUBLICATION_MARK])?;
        let space = rest.iter().position(|&b| b == b' ')?;
        let offset = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        let rest = &rest[space + 1..];
        let space = rest.iter().position(|&b| b == b' ')?;
        let epoch = std::str::from_utf8(&rest[..space]).ok()?;
        let rest = &rest[space + 1..];
        let newline = rest.iter().position(|&b| b == b'\n')?;
        let topic = std::str::from_utf8(&rest[..newline]).ok()?;
        if epoch.is_empty() || topic.is_empty() {
            return None;
        }
        Some(WirePublication {
            offset,
            epoch,
            topic,
            payload: &rest[newline + 1..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn state(top: u64, first: u64) -> StreamState {
        StreamState {
            epoch: "e1".into(),
            top,
            first,
        }
    }

    #[test]
    fn a_position_within_the_window_recovers() {
        // Held 11..=20.
        assert_eq!(
            recovery(&pos(10, "e1"), &state(20, 11)),
            Recovery::Recovered
        );
        assert_eq!(
            recovery(&pos(17, "e1"), &state(20, 11)),
            Recovery::Recovered
        );
        assert_eq!(
            recovery(&pos(20, "e1"), &state(20, 11)),
            Recovery::Recovered,
            "nothing missed"
        );
        // Nothing held, nothing published after the position.
        assert_eq!(
            recovery(&pos(20, "e1"), &state(20, 21)),
            Recovery::Recovered
        );
        assert_eq!(recovery(&pos(0, "e1"), &state(0, 1)), Recovery::Recovered);
        // The last possible offset (only a forged store state has it) does not overflow.
        assert_eq!(
            recovery(&pos(u64::MAX, "e1"), &state(u64::MAX, 1)),
            Recovery::Recovered
        );
    }

    #[test]
    fn a_position_outside_the_window_does_not() {
        assert_eq!(
            recovery(&pos(9, "e1"), &state(20, 11)),
            Recovery::NotRecovered(Unrecoverable::Trimmed),
            "offset 10 is gone"
        );
        assert_eq!(
            recovery(&pos(19, "e1"), &state(20, 21)),
            Recovery::NotRecovered(Unrecoverable::Trimmed),
            "offset 20 expired"
        );
        assert_eq!(
            recovery(&pos(17, "e0"), &state(20, 11)),
            Recovery::NotRecovered(Unrecoverable::OtherEpoch)
        );
        assert_eq!(
            recovery(&pos(21, "e1"), &state(20, 11)),
            Recovery::NotRecovered(Unrecoverable::AheadOfTop)
        );
    }

    #[test]
    fn a_node_delivers_in_offset_order() {
        let last = pos(5, "e1");
        assert_eq!(admit(&last, &pos(6, "e1")), Admission::Deliver);
        assert_eq!(admit(&last, &pos(5, "e1")), Admission::Duplicate);
        assert_eq!(admit(&last, &pos(2, "e1")), Admission::Duplicate);
        assert_eq!(
            admit(&last, &pos(9, "e1")),
            Admission::Gap { from: 6, to: 8 }
        );
        assert_eq!(admit(&last, &pos(1, "e2")), Admission::NewEpoch);
    }

    #[test]
    fn limits_are_validated() {
        let minute = Duration::from_secs(60);
        assert!(HistoryLimits::new(100, minute).is_ok());
        assert!(matches!(
            HistoryLimits::new(0, minute),
            Err(HistoryLimitsError::Size { .. })
        ));
        assert!(HistoryLimits::new(100_001, minute).is_err());
        assert!(HistoryLimits::new(1, Duration::from_millis(500)).is_err());
        assert!(HistoryLimits::new(1, Duration::from_secs(31 * 86_400)).is_err());
        assert_eq!(HistoryLimits::from_options(None, None), Ok(None));
        assert_eq!(
            HistoryLimits::from_options(Some(5), None),
            Err(HistoryLimitsError::Incomplete)
        );
        let limits = HistoryLimits::new(10, minute).unwrap();
        assert_eq!(limits.position_ttl(), HistoryLimits::MIN_POSITION_TTL);
    }

    #[test]
    fn the_history_limit_is_capped() {
        assert_eq!(history_limit(None), MAX_HISTORY_LIMIT);
        assert_eq!(history_limit(Some(10)), 10);
        assert_eq!(history_limit(Some(u64::MAX)), MAX_HISTORY_LIMIT);
    }

    #[test]
    fn the_position_is_written_into_the_object() {
        let out = with_position(r#"{"type":"n","topic":"t"}"#, 17, "ab\"c");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["offset"], 17);
        assert_eq!(v["epoch"], "ab\"c");
        assert_eq!(v["type"], "n");
        assert_eq!(with_position("{}", 1, "e"), r#"{"offset":1,"epoch":"e"}"#);
    }

    #[test]
    fn wire_publications_round_trip() {
        let p = WirePublication {
            offset: 42,
            epoch: "9f3a",
            topic: "chat:lobby",
            payload: br#"{"type":"n"}"#,
        };
        let bytes = p.encode();
        assert_eq!(bytes[0], PUBLICATION_MARK);
        assert_eq!(WirePublication::decode(&bytes), Some(p));
        assert_eq!(WirePublication::decode(b"\x92\x01"), None, "an envelope");
        assert_eq!(WirePublication::decode(b"\xC1x e t\n{}"), None);
        assert_eq!(WirePublication::decode(b"\xC142 e t"), None);
    }
}
