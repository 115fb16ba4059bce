//! The tally's verdict: what one subscriber saw on one topic, held against how the
//! publisher's requests were answered. Every accepted publication arrives exactly
//! once and in order, or its absence sits right at a notice the subscriber was
//! given; anything else fails the test, naming the subscriber, topic and frame.
//!
//! "In order" is each publishing lane's order: a lane sends its next publication
//! only once the last was answered, always through the same node. Lanes are not
//! ordered against each other: on a topic without history "accepted" means queued
//! for the bus, so another node's next publication may overtake it, and a node's
//! own subscribers hear its publications at once while its link to the others may
//! be down. On a history topic positions are checked across lanes as well: offsets
//! follow each other with no gap nobody was told of, and each publication arrives
//! at the position its publish answered. A publication refused with an error
//! status must not arrive at all; one whose request got no answer may arrive once,
//! at any point.

use super::publisher::{Outcome, TopicLog};
use super::subscriber::Event;

/// What the tally found on one topic at one subscriber (violations already failed).
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Accepted publications that arrived.
    pub received: usize,
    /// Accepted publications that never arrived; each sits right at a notice.
    pub lost: Vec<u64>,
    /// Publications whose request got no answer that arrived anyway.
    pub arrived_unaccepted: Vec<u64>,
    /// `missed` reasons, and `recovered:false` answers as `recovered=false:<reason>`.
    pub notices: Vec<String>,
    /// The epochs messages arrived in, in order.
    pub epochs: Vec<String>,
    pub disconnects: usize,
    /// `recovered` of every subscribe answer after the first.
    pub resubscribed: Vec<Option<bool>>,
}

/// Checks `events` (one subscriber, one topic) against `log`. `history`: whether
/// the topic keeps history (so positions must be present and contiguous).
pub fn check(who: &str, history: bool, events: &[Event], log: &TopicLog) -> Verdict {
    let mut whole: Option<Verdict> = None;
    for lane in log.lanes() {
        let who = format!("{who}, lane {lane}");
        let ours = |seq: u64| log.via(seq) == Some(lane);
        // Positions are checked once, over every message.
        let positions = history && whole.is_none();
        let part = check_sequence(&who, history, positions, events, log, &ours);
        match whole.as_mut() {
            None => whole = Some(part),
            Some(w) => {
                w.received += part.received;
                w.lost.extend(part.lost);
                w.arrived_unaccepted.extend(part.arrived_unaccepted);
            }
        }
    }
    let mut whole = whole.unwrap_or_default();
    whole.lost.sort_unstable();
    whole.arrived_unaccepted.sort_unstable();
    whole
}

/// Checks the publications `ours` picks as one sequence; notices and answers count
/// whichever sequence they interrupt. `positions`: also check every message's
/// position (a history topic's, once).
fn check_sequence(
    who: &str,
    history: bool,
    positions: bool,
    events: &[Event],
    log: &TopicLog,
    ours: &dyn Fn(u64) -> bool,
) -> Verdict {
    let fail = |at: usize, what: String| -> ! {
        let from = at.saturating_sub(8);
        let to = (at + 4).min(events.len());
        let shown: Vec<String> = (from..to)
            .map(|i| format!("  {i}: {:?}", events[i]))
            .collect();
        panic!(
            "{who}: {what}\nevents {from}..{to} of {}:\n{}\npublisher: {} accepted, {} not accepted",
            events.len(),
            shown.join("\n"),
            log.accepted().count(),
            log.not_accepted(),
        );
    };
    let mut verdict = Verdict::default();
    let mut last_seq = 0u64;
    // The position the next message must have; `None` after a notice that does not
    // say where delivery continues.
    let mut expect: Option<(u64, String)> = None;
    // Whether the subscriber was told, since the last message, that some may be
    // missing.
    let mut told = false;
    let mut answers = 0usize;
    let mut seen = std::collections::HashSet::new();
    for (at, event) in events.iter().enumerate() {
        match event {
            Event::Subscribed {
                since,
                recovered,
                reason,
                offset,
                epoch,
            } => {
                answers += 1;
                if history && (offset.is_none() || epoch.is_none()) {
                    fail(
                        at,
                        "a history topic's subscribe answered no position".into(),
                    );
                }
                if !history && (offset.is_some() || epoch.is_some()) {
                    fail(at, "a topic without history answered a position".into());
                }
                if answers == 1 {
                    if since.is_some() || recovered.is_some() {
                        fail(at, "the first subscribe is a plain one".into());
                    }
                    if let (Some(o), Some(e)) = (offset, epoch) {
                        expect = Some((o + 1, e.clone()));
                    }
                    continue;
                }
                verdict.resubscribed.push(*recovered);
                match (since, recovered) {
                    (Some(_), Some(true)) => {}
                    (Some(_), Some(false)) => {
                        let reason = reason.clone().unwrap_or_default();
                        verdict.notices.push(format!("recovered=false:{reason}"));
                        told = true;
                        expect = None;
                    }
                    (Some(_), None) => {
                        fail(at, "a subscribe with since answered no `recovered`".into())
                    }
                    (None, _) if history => fail(
                        at,
                        "resubscribed to a history topic without a position".into(),
                    ),
                    (None, _) => {}
                }
            }
            Event::Message { seq, offset, epoch } => {
                let seq = *seq;
                let answered = match log.outcome(seq) {
                    None => fail(at, format!("seq {seq} was never published")),
                    Some(Outcome::Accepted(answered)) => Some(answered),
                    Some(Outcome::Refused(why)) => fail(
                        at,
                        format!("seq {seq} arrived, but its publish was refused: {why}"),
                    ),
                    Some(Outcome::Unanswered(_)) => None,
                };
                if positions {
                    let (Some(offset), Some(epoch)) = (offset, epoch) else {
                        fail(at, "a history topic's message carries no position".into());
                    };
                    if let Some(answered) = answered {
                        let said = answered.as_ref().map(|p| (p.offset, &p.epoch));
                        if said.is_none() {
                            fail(at, format!("the publish of seq {seq} answered no position"));
                        }
                        if said != Some((*offset, epoch)) {
                            fail(
                                at,
                                format!(
                                    "seq {seq} arrived at {offset}/{epoch}, its publish answered {said:?}"
                                ),
                            );
                        }
                    }
                    if let Some((o, e)) = &expect
                        && (offset != o || epoch != e)
                    {
                        fail(
                            at,
                            format!(
                                "position {offset}/{epoch} where {o}/{e} was due, with no notice"
                            ),
                        );
                    }
                    expect = Some((offset + 1, epoch.clone()));
                    if verdict.epochs.last() != Some(epoch) {
                        verdict.epochs.push(epoch.clone());
                    }
                }
                if !history && (offset.is_some() || epoch.is_some()) {
                    fail(at, "a topic without history carries a position".into());
                }
                if !ours(seq) {
                    continue;
                }
                if !seen.insert(seq) {
                    fail(at, format!("seq {seq} arrived twice"));
                }
                if answered.is_none() {
                    // Unanswered: it may have been applied at any time, even after
                    // later ones of its lane were answered.
                    verdict.arrived_unaccepted.push(seq);
                    continue;
                }
                if seq <= last_seq {
                    fail(at, format!("seq {seq} after seq {last_seq}: out of order"));
                }
                for missing in (last_seq + 1..seq).filter(|s| ours(*s)) {
                    if matches!(log.outcome(missing), Some(Outcome::Accepted(_))) {
                        if !told {
                            fail(
                                at,
                                format!(
                                    "accepted seq {missing} never arrived, and nothing said so"
                                ),
                            );
                        }
                        verdict.lost.push(missing);
                    }
                }
                verdict.received += 1;
                last_seq = seq;
                told = false;
            }
            Event::Missed {
                reason,
                offset,
                epoch,
            } => {
                verdict.notices.push(reason.clone());
                told = true;
                if history {
                    expect = offset.zip(epoch.clone()).map(|(o, e)| (o + 1, e));
                } else if offset.is_some() || epoch.is_some() {
                    fail(
                        at,
                        "a notice on a topic without history carries a position".into(),
                    );
                }
            }
            Event::Disconnected(_) => {
                verdict.disconnects += 1;
                // Without history a client knows only that it was away.
                if !history {
                    told = true;
                }
            }
            Event::Unexpected(frame) => fail(at, format!("unexpected frame {frame}")),
        }
    }
    let last = log
        .accepted()
        .map(|(seq, _)| seq)
        .filter(|seq| ours(*seq))
        .max()
        .unwrap_or(0);
    if last > last_seq {
        fail(
            events.len(),
            format!(
                "accepted seqs {}..={last} never arrived (the last one it saw is {last_seq})",
                last_seq + 1
            ),
        );
    }
    verdict
}
