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

/// For each store: history off, then on.
pub async fn history_fanout(
    common: &Common,
    f: Fanout,
    stores: &[Store],
    limits: &HistoryLimits,
) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for &store in stores {
        let mut off = None;
        for history in [None, Some(limits)] {
            let label = format!(
                "realtime ({} store, history {})",
                store.name(),
                if history.is_some() { "on" } else { "off" }
            );
            eprintln!(
                "history-fanout: {label}, {} subscribers at {}/s",
                f.subscribers, f.rate
            );
            let node = Node::start(&common.bins, store, TOPIC, history).await?;
            let measured = measure(&node, &label, f, history.is_some()).await;
            node.stop().await;
            let mut result = measured?;
            match &off {
                None => off = Some(result.clone()),
                Some(base) => {
                    if let Some(note) = overhead(base, &result) {
                        result.notes.insert(0, note);
                    }
                }
            }
            results.push(result);
        }
    }
    let mut params = fanout_params(f);
    params["history_size"] = json!(limits.size);
    params["history_ttl"] = json!(limits.ttl);
    params["stores"] = json!(stores.iter().map(|s| s.name()).collect::<Vec<_>>());
    Ok(common.record("history-fanout", params, results))
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

/// The "on" run against the "off" run: CPU per delivery and per publish.
fn overhead(off: &ServerResult, on: &ServerResult) -> Option<String> {
    let (a, b) = (off.cpu_us_per_delivery?, on.cpu_us_per_delivery?);
    let per_publish = match (off.server_cpu_s, on.server_cpu_s, on.published) {
        (Some(c_off), Some(c_on), Some(n)) if n > 0 => {
            format!(
                "; server CPU {:+.0} µs per publish",
                (c_on - c_off) * 1e6 / n as f64
            )
        }
        _ => String::new(),
    };
    (a > 0.0).then(|| {
        format!(
            "history on ÷ off: CPU per delivery {:.2}× ({a:.2} → {b:.2} µs){per_publish}",
            b / a
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_compares_cpu_per_delivery_and_per_publish() {
        let off = ServerResult {
            cpu_us_per_delivery: Some(10.0),
            server_cpu_s: Some(1.0),
            published: Some(400),
            ..ServerResult::default()
        };
        let on = ServerResult {
            cpu_us_per_delivery: Some(11.0),
            server_cpu_s: Some(1.1),
            ..off.clone()
        };
        assert_eq!(
            overhead(&off, &on).unwrap(),
            "history on ÷ off: CPU per delivery 1.10× (10.00 → 11.00 µs); server CPU +250 µs per publish"
        );
        assert_eq!(overhead(&ServerResult::default(), &on), None);
    }
}
