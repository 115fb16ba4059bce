//! The headline of docs/BENCHMARKS.md: each target of the benchmark issue, the
//! figure that answers it, computed from the saved runs, and whether it is met.

use crate::record::{RunRecord, ServerResult};
use crate::report::{self, grouped, sensible, thousands};

/// Whether a target is met.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Met,
    NotMet,
    NotMeasured,
    /// A figure the issue asks to publish without a bound.
    Reported,
    /// Measured, but not under the target's conditions.
    Unproven(String),
}

impl Verdict {
    fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::NotMet }
    }

    fn text(&self) -> String {
        match self {
            Self::Met => "yes".to_owned(),
            Self::NotMet => "**no**".to_owned(),
            Self::NotMeasured => "not measured".to_owned(),
            Self::Reported => "—".to_owned(),
            Self::Unproven(why) => format!("not shown: {why}"),
        }
    }
}

/// One headline row: what, the measured value, the target, the verdict.
struct Headline {
    what: &'static str,
    value: String,
    target: &'static str,
    verdict: Verdict,
}

impl Headline {
    fn not_measured(what: &'static str, target: &'static str, why: &str) -> Self {
        let verdict = Verdict::NotMeasured;
        Self {
            what,
            value: why.to_owned(),
            target,
            verdict,
        }
    }
}

pub(crate) fn headline(out: &mut String, records: &[RunRecord]) {
    out.push_str("## Headline\n\n");
    let find = |scenario: &str| records.iter().find(|r| r.scenario == scenario);
    let rows = [
        efficiency(find("fanout")),
        fanout_loss(find("fanout")),
        saturation_rate(find("saturation")),
        saturation_loss(find("saturation")),
        idle_memory(find("idle")),
        topics_latency(find("topics")),
        handshakes(find("idle")),
        history_overhead(find("history-fanout")),
        storm(find("recovery-storm")),
        presence_constant(find("presence-stats")),
        presence_churn(find("presence-churn")),
        transport_cpu(find(crate::transports::SCENARIO)),
        transport_rss(find(crate::transports::SCENARIO)),
    ];
    let header = ["figure", "value", "target", "met"].map(str::to_owned);
    let rows = rows.into_iter().map(|h| {
        vec![
            h.what.to_owned(),
            h.value,
            h.target.to_owned(),
            h.verdict.text(),
        ]
    });
    report::aligned_table(out, &header, rows, false);
    out.push_str(
        "Ratios are realtime ÷ ceiling, measured in the same run. A value marked *quick* \
         comes from a `--quick` smoke run and is too short to quote. For topics the row \
         reads the `realtime` result whose label names the rate `5,000/s` (or `5000/s`). \
         For history-fanout the ratio is realtime with the topic's history on ÷ off, per \
         store, measured in the same run. For presence-stats it is the p50 of a WebSocket \
         `presence_stats` on the large topic ÷ the same on the small one, per store; for \
         presence-churn the median server CPU per 1,000 join/leave pairs with presence \
         (and join_leave) on ÷ off, per store. For sse it is the median over rounds \
         with SSE ÷ the same with WebSocket, one server binary under the same load, \
         measured in the same run.\n\n",
    );
}

/// `realtime` and `ceiling` of `record`, both present.
fn pair(record: &RunRecord) -> Option<(&ServerResult, &ServerResult)> {
    Some((record.result("realtime")?, record.result("ceiling")?))
}

fn quick(record: &RunRecord, value: String) -> String {
    if record.quick {
        format!("{value} (*quick*)")
    } else {
        value
    }
}

const EFFICIENCY: (&str, &str) = ("fanout: server CPU per delivery", "≤ 1.10 × ceiling");

fn efficiency(record: Option<&RunRecord>) -> Headline {
    let (what, target) = EFFICIENCY;
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no fanout run");
    };
    let figures = pair(record).and_then(|(ours, ceiling)| {
        Some((ours.cpu_us_per_delivery?, ceiling.cpu_us_per_delivery?))
    });
    let Some((ours, ceiling)) = figures.filter(|f| f.1 > 0.0) else {
        return Headline::not_measured(what, target, "no CPU/delivery for realtime and ceiling");
    };
    let ratio = ours / ceiling;
    let value = format!(
        "{} µs vs {} µs ({ratio:.2}×)",
        sensible(ours),
        sensible(ceiling)
    );
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: Verdict::of(ours <= 1.1 * ceiling),
    }
}

fn fanout_loss(record: Option<&RunRecord>) -> Headline {
    let (what, target) = ("fanout: lost and duplicated", "0 and 0");
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no fanout run");
    };
    let ours = record.result("realtime");
    let Some((lost, dup)) = ours.and_then(|r| Some((r.lost?, r.duplicated?))) else {
        return Headline::not_measured(what, target, "no loss count for realtime");
    };
    let value = format!("lost {}, duplicated {}", thousands(lost), thousands(dup));
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: Verdict::of(lost == 0 && dup == 0),
    }
}

fn saturation_rate(record: Option<&RunRecord>) -> Headline {
    let what = ("saturation: deliveries/s", "≥ 0.9 × ceiling");
    rate_ratio(record, what, 0.9, "saturation", |r| r.deliveries_per_s)
}

/// A per-second figure of realtime against the ceiling's, met at `min` × or more.
fn rate_ratio(
    record: Option<&RunRecord>,
    (what, target): (&'static str, &'static str),
    min: f64,
    scenario: &str,
    figure: impl Fn(&ServerResult) -> Option<f64>,
) -> Headline {
    let Some(record) = record else {
        return Headline::not_measured(what, target, &format!("no {scenario} run"));
    };
    let figures = pair(record).and_then(|(ours, ceiling)| Some((figure(ours)?, figure(ceiling)?)));
    let Some((ours, ceiling)) = figures.filter(|f| f.1 > 0.0) else {
        return Headline::not_measured(what, target, "no figure for both realtime and ceiling");
    };
    let value = format!(
        "{}/s vs {}/s ({:.2}×)",
        grouped(ours, 0),
        grouped(ceiling, 0),
        ours / ceiling
    );
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: Verdict::of(ours >= min * ceiling),
    }
}

fn saturation_loss(record: Option<&RunRecord>) -> Headline {
    let (what, target) = (
        "saturation: silent loss",
        "lost 0 (undelivered accounted by close)",
    );
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no saturation run");
    };
    let Some(ours) = record.result("realtime").filter(|r| r.lost.is_some()) else {
        return Headline::not_measured(what, target, "no loss count for realtime");
    };
    let lost = ours.lost.unwrap_or_default();
    let closed = ours.accounted_by_close.unwrap_or_default();
    let value = format!(
        "lost {}, {} accounted by close",
        thousands(lost),
        thousands(closed)
    );
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: Verdict::of(lost == 0),
    }
}

/// Connections the idle target must be shown at.
const IDLE_CONNECTIONS: usize = 15_000;

fn idle_memory(record: Option<&RunRecord>) -> Headline {
    let (what, target) = (
        "idle: server RSS per connection",
        "≤ 8.0 KiB at ≥ 15,000 connections",
    );
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no idle run");
    };
    let ours = record.result("realtime");
    let Some((kib, conns)) = ours.and_then(|r| Some((r.rss_per_connection_kib?, r.connections)))
    else {
        return Headline::not_measured(what, target, "no RSS/connection for realtime");
    };
    let value = format!("{kib:.2} KiB at {} connections", thousands(conns as u64));
    let verdict = match (kib <= 8.0, conns >= IDLE_CONNECTIONS) {
        (false, _) => Verdict::NotMet,
        (true, true) => Verdict::Met,
        (true, false) => Verdict::Unproven(format!(
            "only {} connections (target needs ≥ 15,000)",
            thousands(conns as u64)
        )),
    };
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict,
    }
}

/// Whether `label` names the rate `5,000` or `5000` (and not, say, `15,000`).
fn names_5000(label: &str) -> bool {
    ["5,000", "5000"].iter().any(|rate| {
        label.match_indices(rate).any(|(at, _)| {
            let before = label[..at].chars().next_back();
            let after = label[at + rate.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit() || c == ',' || c == '.')
                && !after.is_some_and(|c| c.is_ascii_digit() || c == ',')
        })
    })
}

fn topics_latency(record: Option<&RunRecord>) -> Headline {
    let (what, target) = ("topics: p99 latency at 5,000 publishes/s", "≤ 5 ms");
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no topics run");
    };
    let at_5000 = record
        .results
        .iter()
        .find(|r| r.server == "realtime" && names_5000(&r.label));
    let Some((label, p99)) = at_5000.and_then(|r| Some((&r.label, r.latency.as_ref()?.p99_us)))
    else {
        return Headline::not_measured(what, target, "no realtime result labelled 5,000/s");
    };
    let value = format!("{} ms ({label})", report::ms(p99));
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: Verdict::of(p99 <= 5_000.0),
    }
}

fn handshakes(record: Option<&RunRecord>) -> Headline {
    let what = ("idle: handshakes/s", "≥ 0.8 × ceiling");
    rate_ratio(record, what, 0.8, "idle", |r| r.handshakes_per_s)
}

/// The most CPU per delivery history may add.
const HISTORY_OVERHEAD: f64 = 1.2;

/// Per store, the median CPU per delivery with history off and on.
fn history_ratios(record: &RunRecord) -> Vec<(String, f64, f64)> {
    ["memory", "redis"]
        .into_iter()
        .filter_map(|store| {
            let (off, on) = crate::history::medians(&record.results, store)?;
            Some((store.to_owned(), off, on))
        })
        .collect()
}

fn history_overhead(record: Option<&RunRecord>) -> Headline {
    let (what, target) = (
        "history-fanout: CPU per delivery, history on ÷ off",
        "≤ 1.20×",
    );
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no history-fanout run");
    };
    let ratios = history_ratios(record);
    if ratios.is_empty() {
        return Headline::not_measured(what, target, "no history on/off pair");
    }
    let value = ratios
        .iter()
        .map(|(store, off, on)| {
            format!(
                "{store}: {} µs vs {} µs ({:.2}×)",
                sensible(*on),
                sensible(*off),
                on / off
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let met = ratios
        .iter()
        .all(|(_, off, on)| *on <= HISTORY_OVERHEAD * off);
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: Verdict::of(met),
    }
}

fn storm(record: Option<&RunRecord>) -> Headline {
    let (what, target) = (
        "recovery-storm: every client recovered, nothing lost or duplicated",
        "all recovered:true, lost 0, duplicated 0, offsets in order",
    );
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no recovery-storm run");
    };
    if record.results.is_empty() {
        return Headline::not_measured(what, target, "no result");
    }
    let mut met = true;
    let mut parts = Vec::new();
    for r in &record.results {
        let (yes, no) = (r.recovered.unwrap_or(0), r.not_recovered.unwrap_or(0));
        let (lost, dup) = (r.lost.unwrap_or(0), r.duplicated.unwrap_or(0));
        let order = r.offset_errors.unwrap_or(0);
        met &= yes == r.connections as u64 && lost == 0 && dup == 0 && order == 0;
        let caught = r.all_caught_up_ms.map_or_else(
            || "not all caught up".to_owned(),
            |ms| format!("all caught up in {} ms", report::ms(ms * 1000.0)),
        );
        parts.push(format!(
            "{}: {} clients, {} recovered:true, {} false, {caught}; lost {}, duplicated {}",
            r.label,
            thousands(r.connections as u64),
            thousands(yes),
            thousands(no),
            thousands(lost),
            thousands(dup)
        ));
    }
    Headline {
        what,
        value: quick(record, parts.join("; ")),
        target,
        verdict: Verdict::of(met),
    }
}

/// How much slower `presence_stats` may be on the large topic than on the small.
const PRESENCE_CONSTANT: f64 = 2.0;

fn presence_constant(record: Option<&RunRecord>) -> Headline {
    let (what, target) = (
        "presence-stats: presence_stats on a large topic ÷ on a small one (p50, WS)",
        "constant whatever the topic's size: ≤ 2.00×",
    );
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no presence-stats run");
    };
    let figures = crate::presence::constant_time(record);
    if figures.is_empty() {
        return Headline::not_measured(what, target, "no large and small topic pair");
    }
    let members = |key: &str| thousands(record.params[key].as_u64().unwrap_or(0));
    let value = figures
        .iter()
        .map(|(store, large, small)| {
            format!(
                "{store}: {} ms at {} members vs {} ms at {} ({:.2}×)",
                report::ms(*large),
                members("members"),
                report::ms(*small),
                members("small_topic_members"),
                large / small.max(1.0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let met = figures
        .iter()
        .all(|(_, large, small)| *large <= PRESENCE_CONSTANT * small.max(1.0));
    let mismatches: u64 = record
        .results
        .iter()
        .filter_map(|r| r.tally_mismatches)
        .sum();
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: match mismatches {
            0 => Verdict::of(met),
            n => Verdict::Unproven(format!("{n} answers disagreed with the tally")),
        },
    }
}

fn presence_churn(record: Option<&RunRecord>) -> Headline {
    let (what, target) = (
        "presence-churn: server CPU per 1,000 join/leave pairs, presence on ÷ off",
        "published (the issue sets no bound)",
    );
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no presence-churn run");
    };
    let ratios: Vec<(String, f64, f64)> = ["memory", "redis"]
        .into_iter()
        .filter_map(|store| {
            let (off, on) = crate::presence::churn_medians(&record.results, store)?;
            Some((store.to_owned(), off, on))
        })
        .collect();
    if ratios.is_empty() {
        return Headline::not_measured(what, target, "no presence on/off pair");
    }
    let value = ratios
        .iter()
        .map(|(store, off, on)| {
            format!(
                "{store}: {} s vs {} s ({:.2}×)",
                sensible(*on),
                sensible(*off),
                on / off
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mismatches: u64 = record
        .results
        .iter()
        .map(|r| r.tally_mismatches.unwrap_or(0) + r.lost.unwrap_or(0) + r.duplicated.unwrap_or(0))
        .sum();
    Headline {
        what,
        value: quick(record, value),
        target,
        verdict: match mismatches {
            0 => Verdict::Reported,
            n => Verdict::Unproven(format!(
                "{n} joins, leaves or counts disagreed with the tally"
            )),
        },
    }
}

/// The sse scenario's figure over SSE against over WebSocket (medians), with
/// the run's own tally: a lost or duplicated delivery, or a connection that
/// failed, leaves the comparison unproven.
fn transport_row(
    record: Option<&RunRecord>,
    what: &'static str,
    medians: fn(&[ServerResult]) -> Option<(f64, f64)>,
    value: impl Fn(&RunRecord, f64, f64) -> String,
) -> Headline {
    let target = "published (the issue sets no bound)";
    let Some(record) = record else {
        return Headline::not_measured(what, target, "no sse run");
    };
    let Some((ws, sse)) = medians(&record.results) else {
        return Headline::not_measured(what, target, "no WebSocket and SSE pair");
    };
    let faults: u64 = record
        .results
        .iter()
        .map(|r| r.lost.unwrap_or(0) + r.duplicated.unwrap_or(0) + r.failed_connections as u64)
        .sum();
    Headline {
        what,
        value: quick(record, value(record, ws, sse)),
        target,
        verdict: match faults {
            0 => Verdict::Reported,
            n => Verdict::Unproven(format!(
                "{n} deliveries lost or duplicated or connections failed"
            )),
        },
    }
}

fn transport_cpu(record: Option<&RunRecord>) -> Headline {
    transport_row(
        record,
        "sse: server CPU per delivery (fanout), SSE ÷ WebSocket",
        crate::transports::cpu_medians,
        |record, ws, sse| {
            format!(
                "{} µs vs {} µs ({:.2}×) at {} subscribers",
                sensible(sse),
                sensible(ws),
                sse / ws,
                thousands(record.params["subscribers"].as_u64().unwrap_or(0))
            )
        },
    )
}

fn transport_rss(record: Option<&RunRecord>) -> Headline {
    transport_row(
        record,
        "sse: server RSS per idle connection, SSE ÷ WebSocket",
        crate::transports::rss_medians,
        |record, ws, sse| {
            format!(
                "{} KiB vs {} KiB ({:.2}×) at {} connections",
                grouped(sse, 2),
                grouped(ws, 2),
                sse / ws,
                thousands(record.params["idle_connections"].as_u64().unwrap_or(0))
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, results: Vec<ServerResult>) -> RunRecord {
        RunRecord {
            scenario: scenario.into(),
            started_at: String::new(),
            command: String::new(),
            quick: false,
            machine: crate::report::tests::machine(),
            params: serde_json::Value::Null,
            results,
        }
    }

    fn per_delivery(label: &str, us: f64) -> ServerResult {
        ServerResult {
            server: "realtime".into(),
            label: label.into(),
            cpu_us_per_delivery: Some(us),
            ..ServerResult::default()
        }
    }

    #[test]
    fn sse_rows_compare_the_medians_and_are_unproven_after_a_loss() {
        let of = |transport: &str, cpu: Option<f64>, rss: Option<f64>| ServerResult {
            server: "realtime".into(),
            transport: Some(transport.into()),
            cpu_us_per_delivery: cpu,
            rss_per_connection_kib: rss,
            lost: cpu.map(|_| 0),
            duplicated: cpu.map(|_| 0),
            ..ServerResult::default()
        };
        let mut record = run(
            "sse",
            vec![
                of("websocket", Some(8.0), None),
                of("sse", Some(8.8), None),
                of("websocket", None, Some(7.0)),
                of("sse", None, Some(8.75)),
            ],
        );
        record.params = serde_json::json!({"subscribers": 5000, "idle_connections": 15000});
        let cpu = transport_cpu(Some(&record));
        assert_eq!(cpu.value, "8.80 µs vs 8.00 µs (1.10×) at 5,000 subscribers");
        assert_eq!(cpu.verdict, Verdict::Reported);
        let rss = transport_rss(Some(&record));
        assert_eq!(
            rss.value,
            "8.75 KiB vs 7.00 KiB (1.25×) at 15,000 connections"
        );
        assert_eq!(rss.verdict, Verdict::Reported);
        record.results[1].lost = Some(3);
        assert!(matches!(
            transport_cpu(Some(&record)).verdict,
            Verdict::Unproven(_)
        ));
        assert_eq!(transport_rss(None).verdict, Verdict::NotMeasured);
        let ws_only = run("sse", record.results[..1].to_vec());
        assert_eq!(transport_cpu(Some(&ws_only)).verdict, Verdict::NotMeasured);
    }

    #[test]
    fn history_overhead_is_met_only_when_every_store_is_within_the_target() {
        let record = run(
            "history-fanout",
            vec![
                per_delivery("realtime (memory store, history off)", 10.0),
                per_delivery("realtime (memory store, history on)", 11.0),
                per_delivery("realtime (redis store, history off)", 10.0),
                per_delivery("realtime (redis store, history on)", 12.5),
            ],
        );
        let h = history_overhead(Some(&record));
        assert_eq!(
            h.value,
            "memory: 11.0 µs vs 10.0 µs (1.10×); redis: 12.5 µs vs 10.0 µs (1.25×)"
        );
        assert_eq!(h.verdict, Verdict::NotMet);
        let memory_only = run("history-fanout", record.results[..2].to_vec());
        assert_eq!(history_overhead(Some(&memory_only)).verdict, Verdict::Met);
        assert_eq!(history_overhead(None).verdict, Verdict::NotMeasured);
    }

    fn answered(label: String, p50_us: f64) -> ServerResult {
        ServerResult {
            server: "realtime".into(),
            label,
            latency: Some(crate::record::Latency {
                count: 100,
                p50_us,
                p95_us: p50_us,
                p99_us: p50_us,
                p999_us: p50_us,
                max_us: p50_us,
            }),
            tally_mismatches: Some(0),
            ..ServerResult::default()
        }
    }

    #[test]
    fn presence_stats_is_constant_when_the_large_topic_is_within_twice_the_small() {
        use crate::presence::{Question, Way, stats_label};
        let mut record = run(
            "presence-stats",
            vec![
                answered(
                    stats_label("memory", Way::Ws, Question::Stats, 15_000),
                    150.0,
                ),
                answered(
                    stats_label("memory", Way::Http, Question::Stats, 15_000),
                    900.0,
                ),
                answered(stats_label("memory", Way::Ws, Question::Stats, 200), 100.0),
                answered(
                    stats_label("redis", Way::Ws, Question::Stats, 15_000),
                    500.0,
                ),
                answered(stats_label("redis", Way::Ws, Question::Stats, 200), 200.0),
            ],
        );
        record.params = serde_json::json!({"members": 15_000, "small_topic_members": 200});
        let h = presence_constant(Some(&record));
        assert_eq!(
            h.value,
            "memory: 0.15 ms at 15,000 members vs 0.10 ms at 200 (1.50×); redis: 0.50 ms at 15,000 members vs 0.20 ms at 200 (2.50×)"
        );
        assert_eq!(h.verdict, Verdict::NotMet);
        record.results.truncate(3);
        assert_eq!(presence_constant(Some(&record)).verdict, Verdict::Met);
        record.results[0].tally_mismatches = Some(2);
        assert!(matches!(
            presence_constant(Some(&record)).verdict,
            Verdict::Unproven(_)
        ));
        assert_eq!(presence_constant(None).verdict, Verdict::NotMeasured);
    }

    #[test]
    fn presence_churn_reports_the_median_ratio_per_store() {
        use crate::presence::churn_label;
        let pairs = |label: String, s: f64| ServerResult {
            server: "realtime".into(),
            label,
            cpu_s_per_1000_pairs: Some(s),
            tally_mismatches: Some(0),
            ..ServerResult::default()
        };
        let mut record = run(
            "presence-churn",
            vec![
                pairs(churn_label("memory", false, 1, 1), 0.5),
                pairs(churn_label("memory", true, 1, 1), 0.6),
            ],
        );
        let h = presence_churn(Some(&record));
        assert_eq!(h.value, "memory: 0.60 s vs 0.50 s (1.20×)");
        assert_eq!(h.verdict, Verdict::Reported);
        record.results[1].lost = Some(1);
        assert!(matches!(
            presence_churn(Some(&record)).verdict,
            Verdict::Unproven(_)
        ));
    }

    #[test]
    fn the_storm_is_met_when_all_recovered_and_nothing_was_lost() {
        let result = ServerResult {
            server: "realtime".into(),
            label: "realtime (memory store)".into(),
            connections: 1000,
            recovered: Some(1000),
            not_recovered: Some(0),
            lost: Some(0),
            duplicated: Some(0),
            offset_errors: Some(0),
            all_caught_up_ms: Some(412.0),
            ..ServerResult::default()
        };
        let h = storm(Some(&run("recovery-storm", vec![result.clone()])));
        assert_eq!(
            h.value,
            "realtime (memory store): 1,000 clients, 1,000 recovered:true, 0 false, all caught up in 412.00 ms; lost 0, duplicated 0"
        );
        assert_eq!(h.verdict, Verdict::Met);
        let partial = ServerResult {
            recovered: Some(999),
            not_recovered: Some(1),
            all_caught_up_ms: None,
            ..result
        };
        let h = storm(Some(&run("recovery-storm", vec![partial])));
        assert!(h.value.contains("not all caught up"), "{}", h.value);
        assert_eq!(h.verdict, Verdict::NotMet);
    }

    #[test]
    fn names_5000_ignores_other_rates() {
        assert!(names_5000("realtime 3 nodes, 5,000/s"));
        assert!(names_5000("realtime 5000/s"));
        assert!(!names_5000("realtime 3 nodes, 15,000/s"));
        assert!(!names_5000("realtime 50000/s"));
        assert!(!names_5000("realtime 1,000/s"));
    }
}
