//! Per-connection accounting of deliveries: which sequence numbers arrived (to
//! count lost and duplicated messages), end-to-end latency from the timestamp the
//! publisher put in the payload, and how the connection ended.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch: the clock publisher and subscribers share.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The latency histogram every tracker uses: 1 µs to 60 s, 2 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds")
}

/// What one connection received.
#[derive(Debug)]
pub struct Tracker {
    /// Index of the topic the connection subscribed to.
    pub topic: usize,
    seen: Vec<u64>,
    pub distinct: u64,
    pub duplicated: u64,
    /// Created on the first delivery, so idle connections cost no histogram.
    pub latency: Option<Histogram<u64>>,
    /// The close code, when the server closed the connection.
    pub close_code: Option<u16>,
}

impl Tracker {
    pub fn new(topic: usize) -> Self {
        Tracker {
            topic,
            seen: Vec::new(),
            distinct: 0,
            duplicated: 0,
            latency: None,
            close_code: None,
        }
    }

    /// Accounts for one text frame. Returns whether it was a benchmark message.
    pub fn record(&mut self, frame: &str, with_latency: bool) -> bool {
        let Some((seq, sent)) = parse_stamp(frame) else {
            return false;
        };
        if with_latency {
            let latency = now_us().saturating_sub(sent).max(1);
            let histogram = self.latency.get_or_insert_with(new_histogram);
            let _ = histogram.record(latency.min(60_000_000));
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
        } else {
            self.seen[word] |= 1 << bit;
            self.distinct += 1;
        }
        true
    }

    pub fn closed(&mut self, code: u16) {
        self.close_code.get_or_insert(code);
    }

    /// Whether message `seq` arrived.
    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

/// Finds `"seq":N` and `"sent":N` in a frame of any of the three wire formats
/// (our message, the ceiling's raw body, a Socket.IO event packet).
pub fn parse_stamp(frame: &str) -> Option<(u64, u64)> {
    Some((
        number_after(frame, "\"seq\":")?,
        number_after(frame, "\"sent\":")?,
    ))
}

fn number_after(frame: &str, key: &str) -> Option<u64> {
    let start = frame.find(key)? + key.len();
    frame[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(None, |acc: Option<u64>, d| {
            Some(acc.unwrap_or(0).wrapping_mul(10) + u64::from(d - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stamp_in_every_wire_format() {
        let ours = r#"{"type":"bench","seq":42,"sent":1700000000000000,"pad":"x","topic":"t","timestamp":"2026-11-23T00:00:00.000Z"}"#;
        assert_eq!(parse_stamp(ours), Some((42, 1_700_000_000_000_000)));
        let socketio = r#"42["message",{"type":"bench","seq":7,"sent":99,"pad":"xx"}]"#;
        assert_eq!(parse_stamp(socketio), Some((7, 99)));
        assert_eq!(parse_stamp(r#"{"type":"welcome"}"#), None);
        assert_eq!(parse_stamp(r#"{"seq":}"#), None);
    }

    #[test]
    fn counts_distinct_and_duplicated_sequence_numbers() {
        let mut t = Tracker::new(0);
        for seq in [0, 1, 1, 130, 0] {
            assert!(t.record(&format!(r#"{{"seq":{seq},"sent":1}}"#), false));
        }
        assert_eq!((t.distinct, t.duplicated), (3, 2));
        assert!(t.has(130) && t.has(1) && !t.has(2) && !t.has(10_000));
        assert!(!t.record("3", true));
    }
}
