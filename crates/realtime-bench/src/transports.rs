//! The sse scenario: one server binary under the same load over WebSocket and
//! over Server-Sent Events, side by side in one run, round after round in
//! alternating order: fanout (server CPU per delivery; every delivery tallied
//! once per subscriber by sequence number) and idle (server RSS per idle
//! connection). Every measurement gets a freshly started server process.

use realtime_core::Transport;
use serde_json::json;

use crate::delivery::{self, DeliveryPlan};
use crate::idle;
use crate::procstat::ProcWatch;
use crate::record::{RunRecord, ServerResult};
use crate::scenarios::{Common, Fanout, fanout_params, fanout_plan};
use crate::servers::Kind;

/// The scenario's name, in records and on the command line.
pub const SCENARIO: &str = "sse";

/// The two transports, in the order of odd rounds.
const TRANSPORTS: [Transport; 2] = [Transport::Websocket, Transport::Sse];

/// Parameters of the sse scenario.
#[derive(Debug, Clone, Copy)]
pub struct TransportRun {
    /// The fanout load, the same for both transports.
    pub fanout: Fanout,
    /// Idle connections per transport.
    pub idle: usize,
    /// WebSocket/SSE pairs of each measurement, in alternating order.
    pub rounds: usize,
}

/// Which measurement a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fanout,
    Idle,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Fanout => "fanout",
            Phase::Idle => "idle",
        }
    }

    /// The figure this phase compares between transports.
    fn figure(self) -> fn(&ServerResult) -> Option<f64> {
        match self {
            Phase::Fanout => |r| r.cpu_us_per_delivery,
            Phase::Idle => |r| r.rss_per_connection_kib,
        }
    }
}

/// The label of one measurement: `realtime websocket fanout (round 2)`.
pub fn label(transport: Transport, phase: &str, round: usize, rounds: usize) -> String {
    match rounds {
        0 | 1 => format!("realtime {} {phase}", transport.as_str()),
        _ => format!("realtime {} {phase} (round {round})", transport.as_str()),
    }
}

pub async fn sse(common: &Common, t: &TransportRun) -> anyhow::Result<RunRecord> {
    let rounds = t.rounds.max(1);
    let mut results = Vec::new();
    for round in 1..=rounds {
        // Odd rounds start with WebSocket, even ones with SSE, so a drift in
        // what else runs on the machine does not always favour one side.
        let mut order = TRANSPORTS;
        if round % 2 == 0 {
            order.reverse();
        }
        for phase in [Phase::Fanout, Phase::Idle] {
            let mut pair = Vec::new();
            for transport in order {
                let label = label(transport, phase.name(), round, rounds);
                let mut result = measure(common, t, phase, transport, &label).await?;
                result.label = label;
                result.transport = Some(transport.as_str().to_owned());
                pair.push(result);
            }
            if pair[0].transport.as_deref() == Some(Transport::Sse.as_str()) {
                pair.swap(0, 1);
            }
            if let Some(note) = ratio_note(phase, &pair[0], &pair[1]) {
                pair[1].notes.insert(0, note);
            }
            results.extend(pair);
        }
    }
    if rounds > 1 {
        for phase in [Phase::Fanout, Phase::Idle] {
            let Some((ws, sse)) = medians(&results, phase.figure()) else {
                continue;
            };
            let unit = unit(phase);
            let note = format!(
                "median over {rounds} rounds of {}: WebSocket {ws:.2} {unit}, SSE {sse:.2} {unit} ({:.2}×)",
                what(phase),
                sse / ws
            );
            if let Some(last) = results
                .iter_mut()
                .rev()
                .find(|r| phase.figure()(r).is_some())
            {
                last.notes.insert(0, note);
            }
        }
    }
    let mut params = fanout_params(t.fanout);
    params["idle_connections"] = json!(t.idle);
    params["rounds"] = json!(rounds);
    params["transports"] = json!(TRANSPORTS.map(Transport::as_str));
    Ok(common.record(SCENARIO, params, results))
}

/// One measurement on a fresh server process.
async fn measure(
    common: &Common,
    t: &TransportRun,
    phase: Phase,
    transport: Transport,
    label: &str,
) -> anyhow::Result<ServerResult> {
    let f = t.fanout;
    match phase {
        Phase::Fanout => eprintln!(
            "{SCENARIO}: {label}, {} subscribers at {}/s",
            f.subscribers, f.rate
        ),
        Phase::Idle => eprintln!("{SCENARIO}: {label}, {} connections", t.idle),
    }
    let server = common.start(Kind::Realtime).await?;
    let measured = match phase {
        Phase::Fanout => {
            let plan = DeliveryPlan {
                transport,
                ..fanout_plan(Kind::Realtime, label, server.addr, f, 0)
            };
            delivery::run(&plan, &ProcWatch::new(vec![server.pid()])).await
        }
        Phase::Idle => idle::run(&server, t.idle, transport).await,
    };
    server.stop().await;
    measured
}

fn what(phase: Phase) -> &'static str {
    match phase {
        Phase::Fanout => "server CPU per delivery",
        Phase::Idle => "server RSS per idle connection",
    }
}

fn unit(phase: Phase) -> &'static str {
    match phase {
        Phase::Fanout => "µs",
        Phase::Idle => "KiB",
    }
}

/// SSE against WebSocket in one round.
fn ratio_note(phase: Phase, ws: &ServerResult, sse: &ServerResult) -> Option<String> {
    let (a, b) = (phase.figure()(ws)?, phase.figure()(sse)?);
    (a > 0.0).then(|| {
        format!(
            "SSE ÷ WebSocket in this round: {} {:.2}× ({a:.2} → {b:.2} {})",
            what(phase),
            b / a,
            unit(phase)
        )
    })
}

/// The medians of `figure` over the WebSocket and the SSE results that have it.
pub(crate) fn medians(
    results: &[ServerResult],
    figure: fn(&ServerResult) -> Option<f64>,
) -> Option<(f64, f64)> {
    let of = |transport: Transport| {
        let mut values: Vec<f64> = results
            .iter()
            .filter(|r| r.transport.as_deref() == Some(transport.as_str()))
            .filter_map(figure)
            .collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => None,
            n if n % 2 == 1 => Some(values[n / 2]),
            n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    };
    let (ws, sse) = (of(Transport::Websocket)?, of(Transport::Sse)?);
    (ws > 0.0).then_some((ws, sse))
}

/// Server CPU per delivery: the medians over WebSocket and SSE.
pub(crate) fn cpu_medians(results: &[ServerResult]) -> Option<(f64, f64)> {
    medians(results, Phase::Fanout.figure())
}

/// Server RSS per idle connection: the medians over WebSocket and SSE.
pub(crate) fn rss_medians(results: &[ServerResult]) -> Option<(f64, f64)> {
    medians(results, Phase::Idle.figure())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(transport: Transport, cpu: Option<f64>, rss: Option<f64>) -> ServerResult {
        ServerResult {
            transport: Some(transport.as_str().into()),
            cpu_us_per_delivery: cpu,
            rss_per_connection_kib: rss,
            ..ServerResult::default()
        }
    }

    #[test]
    fn medians_keep_each_transport_and_each_figure_apart() {
        use Transport::{Sse, Websocket};
        let results = [
            row(Websocket, Some(6.0), None),
            row(Sse, Some(7.0), None),
            row(Websocket, None, Some(7.1)),
            row(Sse, None, Some(9.0)),
            row(Sse, Some(8.0), None),
            row(Websocket, Some(5.0), None),
            row(Websocket, Some(5.5), None),
            row(Sse, Some(6.5), None),
        ];
        assert_eq!(cpu_medians(&results), Some((5.5, 7.0)));
        assert_eq!(rss_medians(&results), Some((7.1, 9.0)));
        assert_eq!(cpu_medians(&results[..1]), None, "no SSE result");
    }

    #[test]
    fn the_round_note_reads_sse_over_websocket() {
        let ws = row(Transport::Websocket, Some(4.0), None);
        let sse = row(Transport::Sse, Some(5.0), None);
        assert_eq!(
            ratio_note(Phase::Fanout, &ws, &sse).unwrap(),
            "SSE ÷ WebSocket in this round: server CPU per delivery 1.25× (4.00 → 5.00 µs)"
        );
        assert_eq!(ratio_note(Phase::Idle, &ws, &sse), None);
        assert_eq!(
            label(Transport::Sse, "idle", 2, 3),
            "realtime sse idle (round 2)"
        );
        assert_eq!(
            label(Transport::Websocket, "fanout", 1, 1),
            "realtime websocket fanout"
        );
    }
}
