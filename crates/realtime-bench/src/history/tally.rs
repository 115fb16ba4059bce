//! The generator's own check of a history stream, by offset: each publication one
//! after the last, in the same epoch. Kept apart from the sequence-number tally
//! (which counts lost and duplicated messages) so either catches what the other
//! would miss.

use super::http::Position;

/// What one client's stream looked like, offset by offset.
#[derive(Debug, Default, Clone)]
pub struct OffsetTally {
    last: Option<Position>,
    /// Offsets skipped between two deliveries.
    pub skipped: u64,
    /// Deliveries at or below the last offset delivered.
    pub repeated: u64,
    /// Deliveries in an epoch other than the last one's.
    pub epoch_changes: u64,
}

impl OffsetTally {
    /// Where the stream continues from: the next delivery should be one after it.
    pub fn resume_at(&mut self, position: Position) {
        self.last = Some(position);
    }

    /// The last position delivered (or resumed at).
    pub fn position(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    /// The last offset, 0 before any.
    pub fn offset(&self) -> u64 {
        self.last.as_ref().map_or(0, |p| p.offset)
    }

    /// Accounts for one delivery at `offset` in `epoch`.
    pub fn record(&mut self, offset: u64, epoch: &str) {
        match &mut self.last {
            Some(last) if last.epoch != epoch => {
                self.epoch_changes += 1;
                *last = Position {
                    offset,
                    epoch: epoch.to_owned(),
                };
            }
            Some(last) if offset <= last.offset => self.repeated += 1,
            Some(last) => {
                self.skipped += offset - last.offset - 1;
                last.offset = offset;
            }
            None => {
                self.last = Some(Position {
                    offset,
                    epoch: epoch.to_owned(),
                })
            }
        }
    }

    /// Every departure from "one after the last, same epoch".
    pub fn errors(&self) -> u64 {
        self.skipped + self.repeated + self.epoch_changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position {
            offset,
            epoch: "E".into(),
        }
    }

    #[test]
    fn consecutive_offsets_are_clean() {
        let mut t = OffsetTally::default();
        t.resume_at(at(4));
        for offset in 5..=9 {
            t.record(offset, "E");
        }
        assert_eq!((t.errors(), t.offset()), (0, 9));
    }

    #[test]
    fn skips_repeats_and_epoch_changes_are_counted() {
        let mut t = OffsetTally::default();
        t.resume_at(at(0));
        t.record(1, "E");
        t.record(4, "E"); // 2 and 3 skipped
        t.record(4, "E"); // repeated
        t.record(2, "E"); // late: repeated
        t.record(1, "F"); // another epoch
        t.record(2, "F");
        assert_eq!((t.skipped, t.repeated, t.epoch_changes), (2, 2, 1));
        assert_eq!(t.errors(), 5);
        assert_eq!(
            t.position(),
            Some(&Position {
                offset: 2,
                epoch: "F".into()
            })
        );
    }

    #[test]
    fn the_first_delivery_sets_the_position_without_a_resume() {
        let mut t = OffsetTally::default();
        t.record(7, "E");
        t.record(8, "E");
        assert_eq!((t.errors(), t.offset()), (0, 8));
    }
}
