//! Fan-out with history on against off: the fanout measurement on one node, once
//! with the topic in a namespace keeping history and once without, on each
//! store, side by side; the ratio of server CPU per delivery is the figure.

use serde_json::json;

use super::http::Api;
use super::node::{HistoryLimits, Node, Store};
use crate::delivery::{self, DeliveryPlan};
use crate::procstat::ProcWatch;
use crate::record::{RunRecord, ServerResult};
use crate::scenarios::{Common, Fanout, fanout_params, fanout_plan};
use crate::servers::Kind;

/// The topic the fanout plan publishes to.
const TOPIC: &str = "bench";

/// `rounds` times, for each store: history off and on, in alternating order (so
/// a drift in what else runs on the machine does not always favour one side).
pub async fn history_fanout(
    common: &Common,
    f: Fanout,
    stores: &[Store],
    limits: &HistoryLimits,
    rounds: usize,
) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for round in 1..=rounds.max(1) {
        for &store in stores {
            let order = match round % 2 {
                1 => [None, Some(limits)],
                _ => [Some(limits), None],
            };
            let mut pair: Vec<ServerResult> = Vec::new();
            for history in order {
                let label = label(store, history.is_some(), round, rounds);
                eprintln!(
                    "history-fanout: {label}, {} subscribers at {}/s",
                    f.subscribers, f.rate
                );
                let node = Node::start(&common.bins, store, TOPIC, history).await?;
                let measured = measure(&node, &label, f, history.is_some()).await;
                node.stop().await;
                pair.push(measured?);
            }
            if history_on(&pair[0]) {
                pair.swap(0, 1);
            }
            if let Some(note) = overhead(&pair[0], &pair[1]) {
                pair[1].notes.insert(0, note);
            }
            results.extend(pair);
        }
    }
    if rounds > 1 {
        for &store in stores {
            let Some((off, on)) = medians(&results, store.name()) else {
                continue;
            };
            let note = format!(
                "median over {rounds} rounds of CPU per delivery: history off {off:.2} µs, on {on:.2} µs ({:.2}×)",
                on / off
            );
            if let Some(last) = results
                .iter_mut()
                .rev()
                .find(|r| r.label.contains(&format!("{} store", store.name())))
            {
                last.notes.insert(0, note);
            }
        }
    }
    let mut params = fanout_params(f);
    params["history_size"] = json!(limits.size);
    params["history_ttl"] = json!(limits.ttl);
    params["stores"] = json!(stores.iter().map(|s| s.name()).collect::<Vec<_>>());
    params["rounds"] = json!(rounds);
    Ok(common.record("history-fanout", params, results))
}

fn label(store: Store, history: bool, round: usize, rounds: usize) -> String {
    let state = if history { "on" } else { "off" };
    match rounds {
        0 | 1 => format!("realtime ({} store, history {state})", store.name()),
        _ => format!(
            "realtime ({} store, history {state}, round {round})",
            store.name()
        ),
    }
}

fn history_on(result: &ServerResult) -> bool {
    result.label.contains("history on")
}

/// The median CPU per delivery of `store`'s results with history off and on, as
/// labelled by this scenario.
pub(crate) fn medians(results: &[ServerResult], store: &str) -> Option<(f64, f64)> {
    let of = |on: bool| {
        let mut values: Vec<f64> = results
            .iter()
            .filter(|r| r.label.contains(&format!("{store} store")) && history_on(r) == on)
            .filter_map(|r| r.cpu_us_per_delivery)
            .collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => None,
            n if n % 2 == 1 => Some(values[n / 2]),
            n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    };
    let (off, on) = (of(false)?, of(true)?);
    (off > 0.0).then_some((off, on))
}

async fn measure(
    node: &Node,
    label: &str,
    f: Fanout,
    history: bool,
) -> anyhow::Result<ServerResult> {
    let plan = DeliveryPlan {
        redis_pid: node.redis_pid(),
        ..fanout_plan(Kind::Realtime, label, node.server.addr, f, 0)
    };
    let mut result = delivery::run(&plan, &ProcWatch::new(vec![node.server.pid()])).await?;
    if history {
        // An independent check that history was on: the topic's top offset is
        // the number of publishes the server accepted.
        let position = Api::new(node.server.addr).position(TOPIC).await?;
        let published = result.published.unwrap_or(0);
        if position.offset != published {
            anyhow::bail!(
                "{label}: the topic's history ends at offset {} after {published} accepted publishes",
                position.offset
            );
        }
        result.notes.push(format!(
            "the topic's history ends at offset {} (epoch {}): every accepted publish got a position",
            position.offset, position.epoch
        ));
    }
    if node.redis.is_some() {
        result
            .notes
            .push("server CPU is the node's alone; Redis's is in the machine load note".into());
    }
    Ok(result)
}

/// The "on" run against the "off" run of the same round: CPU per delivery.
fn overhead(off: &ServerResult, on: &ServerResult) -> Option<String> {
    let (a, b) = (off.cpu_us_per_delivery?, on.cpu_us_per_delivery?);
    (a > 0.0).then(|| {
        format!(
            "history on ÷ off in this round: CPU per delivery {:.2}× ({a:.2} → {b:.2} µs)",
            b / a
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_compares_cpu_per_delivery() {
        let off = ServerResult {
            cpu_us_per_delivery: Some(10.0),
            ..ServerResult::default()
        };
        let on = ServerResult {
            cpu_us_per_delivery: Some(11.0),
            ..ServerResult::default()
        };
        assert_eq!(
            overhead(&off, &on).unwrap(),
            "history on ÷ off in this round: CPU per delivery 1.10× (10.00 → 11.00 µs)"
        );
        assert_eq!(overhead(&ServerResult::default(), &on), None);
    }

    #[test]
    fn medians_take_the_middle_round_of_each_side() {
        let row = |label: &str, us: f64| ServerResult {
            label: label.into(),
            cpu_us_per_delivery: Some(us),
            ..ServerResult::default()
        };
        let results = [
            row("realtime (memory store, history off, round 1)", 6.0),
            row("realtime (memory store, history on, round 1)", 4.0),
            row("realtime (memory store, history on, round 2)", 5.0),
            row("realtime (memory store, history off, round 2)", 4.5),
            row("realtime (memory store, history off, round 3)", 5.0),
            row("realtime (memory store, history on, round 3)", 5.5),
            row("realtime (redis store, history off)", 4.0),
        ];
        assert_eq!(medians(&results, "memory"), Some((5.0, 5.0)));
        assert_eq!(medians(&results[..4], "memory"), Some((5.25, 4.5)));
        assert_eq!(medians(&results, "redis"), None, "no history-on row");
    }
}
