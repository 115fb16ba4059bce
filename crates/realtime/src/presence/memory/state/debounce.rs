//! The debounce in the shared presence state: a user's (topic's) count going to
//! zero starts the grace; the grace running out with nobody back queues
//! `user.offline` (`topic.vacated`); the first arrival queues `user.online`
//! (`topic.occupied`).

use realtime_core::presence::{Change, Occupancy};
use realtime_core::{EventKind, PresenceEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Debounce, Effects, State, Subject};

impl State {
    /// The count of `subject` changed: debounce it, queue what it reports.
    pub(super) fn count(&mut self, subject: Subject, count: u64, now_ms: u64, fx: &mut Effects) {
        let Some(Debounce { grace }) = self.debounce else {
            return;
        };
        let old = self
            .occupancy
            .get(&subject)
            .copied()
            .unwrap_or(Occupancy::Absent);
        let (new, change) = old.counted(count, now_ms);
        if new != old {
            if let Some(at) = old.gone_at(grace) {
                self.pending.remove(&(at, subject.clone()));
            }
            if let Some(at) = new.gone_at(grace) {
                self.pending.insert((at, subject.clone()));
                fx.pending = true;
            }
        }
        if change == Some(Change::Appeared) {
            self.queue_event(&subject, Change::Appeared, now_ms, fx);
        }
        self.settle(subject, new);
    }

    pub(super) fn settle(&mut self, subject: Subject, occupancy: Occupancy) {
        if occupancy == Occupancy::Absent {
            self.occupancy.remove(&subject);
        } else {
            self.occupancy.insert(subject, occupancy);
        }
    }

    /// Queues the gone events whose grace ran out by `now_ms`. Returns when the
    /// next one falls due.
    pub(in crate::presence::memory) fn sweep(
        &mut self,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<u64> {
        let grace = self.debounce?.grace;
        while let Some((at, _)) = self.pending.first() {
            if *at > now_ms {
                return Some(*at);
            }
            let Some((_, subject)) = self.pending.pop_first() else {
                break;
            };
            let Some(old) = self.occupancy.get(&subject).copied() else {
                continue;
            };
            let (new, change) = old.elapsed(now_ms, grace);
            if let (Some(Change::Gone), Occupancy::Leaving { since_ms }) = (change, old) {
                // Stamped with the last leave, not with the end of the grace.
                self.queue_event(&subject, Change::Gone, since_ms, fx);
            }
            self.settle(subject, new);
        }
        None
    }

    fn queue_event(&mut self, subject: &Subject, change: Change, at_ms: u64, fx: &mut Effects) {
        let (kind, user_id, topic) = match (subject, change) {
            (Subject::User(u), Change::Appeared) => (EventKind::UserOnline, Some(u.clone()), None),
            (Subject::User(u), Change::Gone) => (EventKind::UserOffline, Some(u.clone()), None),
            (Subject::Topic(t), Change::Appeared) => {
                (EventKind::TopicOccupied, None, Some(t.to_string()))
            }
            (Subject::Topic(t), Change::Gone) => {
                (EventKind::TopicVacated, None, Some(t.to_string()))
            }
        };
        let event = PresenceEvent {
            id: Uuid::new_v4().to_string(),
            kind,
            timestamp: timestamp(at_ms),
            user_id,
            topic,
        };
        if self.queue.push(event) {
            fx.queued = true;
        }
    }
}

fn timestamp(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    realtime_core::message::rfc3339_millis(t)
}
