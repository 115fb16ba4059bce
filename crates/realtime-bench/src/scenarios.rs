//! The five scenarios (plus saturation, fanout at 4× the load): which servers each
//! starts, with which plans, and the record each produces. Every measurement gets
//! a freshly started server process, stopped afterwards.

use std::time::Duration;

use realtime_core::Transport;
use serde_json::json;

use crate::delivery::{self, DeliveryPlan};
use crate::idle;
use crate::procstat::ProcWatch;
use crate::record::{RunRecord, ServerResult};
use crate::servers::{Binaries, Kind, Redis, ServerProcess};

/// Environment for nodes that share this machine with other nodes: three nodes
/// on two cores with a runtime thread per core each would mostly measure thread
/// wake-ups, so each node runs one worker (as each would own one machine's cores
/// in a real deployment).
fn shared_machine_env() -> Vec<(String, String)> {
    vec![("REALTIME_WORKER_THREADS".into(), "1".into())]
}

/// Settings every scenario shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub quick: bool,
    /// Servers to measure side by side, in order.
    pub servers: Vec<Kind>,
    pub bins: Binaries,
}

/// Parameters of a fan-out measurement.
#[derive(Debug, Clone, Copy)]
pub struct Fanout {
    pub subscribers: usize,
    pub rate: f64,
    pub size: usize,
    pub duration: Duration,
}

impl Common {
    pub(crate) async fn start(&self, kind: Kind) -> anyhow::Result<ServerProcess> {
        match kind {
            Kind::Realtime => self.bins.realtime(None, "bench-node", &[]).await,
            Kind::Ceiling => self.bins.ceiling().await,
            Kind::SocketIo => self.bins.socketio().await,
        }
    }

    pub(crate) fn record(
        &self,
        scenario: &str,
        params: serde_json::Value,
        results: Vec<ServerResult>,
    ) -> RunRecord {
        RunRecord {
            scenario: scenario.to_owned(),
            started_at: now_rfc3339(),
            command: command_line(),
            quick: self.quick,
            machine: crate::machine::describe(),
            params,
            results,
        }
    }
}

/// Idle connections: RSS per connection and handshakes per second.
pub async fn idle(common: &Common, connections: usize) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for &kind in &common.servers {
        eprintln!("idle: {} with {connections} connections", kind.name());
        let server = common.start(kind).await?;
        results.push(idle::run(&server, connections, Transport::Websocket).await?);
        server.stop().await;
    }
    Ok(common.record("idle", json!({"connections": connections}), results))
}

/// One topic, every subscriber on it, one server process.
pub async fn fanout(common: &Common, name: &str, f: Fanout) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for &kind in &common.servers {
        eprintln!(
            "{name}: {} with {} subscribers at {}/s",
            kind.name(),
            f.subscribers,
            f.rate
        );
        let server = common.start(kind).await?;
        let plan = single_node_plan(kind, kind.name(), &server, f, 0);
        results.push(delivery::run(&plan, &ProcWatch::new(vec![server.pid()])).await?);
        server.stop().await;
    }
    Ok(common.record(name, fanout_params(f), results))
}

/// One stalled subscriber among `f.subscribers`: the others' latency and the
/// server's memory, compared with the same run without it.
pub async fn slow_consumer(common: &Common, f: Fanout) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for &kind in &common.servers {
        for stalled in [0, 1] {
            let label = match stalled {
                0 => format!("{} (all reading)", kind.name()),
                _ => format!("{} (1 stalled)", kind.name()),
            };
            eprintln!("slow-consumer: {label}");
            let server = common.start(kind).await?;
            let plan = single_node_plan(kind, &label, &server, f, stalled);
            let mut result = delivery::run(&plan, &ProcWatch::new(vec![server.pid()])).await?;
            if stalled > 0 {
                if let Some(note) = results.last().and_then(|base| p99_change(base, &result)) {
                    result.notes.push(note);
                }
                result.notes.push(
                    "latency and loss are those of the reading subscribers; the stalled one's missing deliveries count as accounted only if the server closed it".into(),
                );
            }
            results.push(result);
            server.stop().await;
        }
    }
    let mut params = fanout_params(f);
    params["stalled"] = json!(1);
    Ok(common.record("slow-consumer", params, results))
}

/// Subscribers on node B, publisher on node A, through a private Redis; compared
/// with the same fan-out on one node.
pub async fn cross_node(common: &Common, f: Fanout) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    eprintln!("cross-node: single node");
    let single = common.start(Kind::Realtime).await?;
    let plan = single_node_plan(Kind::Realtime, "realtime (1 node)", &single, f, 0);
    results.push(delivery::run(&plan, &ProcWatch::new(vec![single.pid()])).await?);
    single.stop().await;

    eprintln!("cross-node: node A → Redis → node B");
    let redis = Redis::start().await?;
    let env = shared_machine_env();
    let a = common
        .bins
        .realtime(Some(&redis.url()), "node-a", &env)
        .await?;
    let b = common
        .bins
        .realtime(Some(&redis.url()), "node-b", &env)
        .await?;
    let plan = DeliveryPlan {
        publish_nodes: vec![a.addr],
        redis_pid: Some(redis.pid()),
        ..fanout_plan(Kind::Realtime, "realtime (A → Redis → B)", b.addr, f, 0)
    };
    let mut result = delivery::run(&plan, &ProcWatch::new(vec![a.pid(), b.pid()])).await?;
    result
        .notes
        .push("server CPU is summed over both nodes, without Redis; each node runs one worker thread (REALTIME_WORKER_THREADS=1) since they share this machine's cores".into());
    if let (Some(one), Some(two)) = (&results[0].latency, &result.latency) {
        result.notes.push(format!(
            "latency added over one node: p50 +{:.2} ms, p99 +{:.2} ms",
            (two.p50_us - one.p50_us) / 1000.0,
            (two.p99_us - one.p99_us) / 1000.0
        ));
    }
    results.push(result);
    a.stop().await;
    b.stop().await;
    drop(redis);
    let mut params = fanout_params(f);
    params["nodes"] = json!(2);
    Ok(common.record("cross-node", params, results))
}

/// Parameters of the multi-topic, multi-node scenario.
#[derive(Debug, Clone)]
pub struct Topics {
    pub nodes: usize,
    pub subscribers: usize,
    pub topics: usize,
    pub rates: Vec<f64>,
    pub size: usize,
    pub duration: Duration,
}

/// Sockudo's published scenario: nodes over Redis, subscribers spread over topics
/// and nodes, publishes spread over topics and nodes, at each rate.
pub async fn topics(common: &Common, t: &Topics) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for &rate in &t.rates {
        eprintln!("topics: {} nodes, {rate}/s", t.nodes);
        let redis = Redis::start().await?;
        let mut nodes = Vec::new();
        for i in 0..t.nodes {
            nodes.push(
                common
                    .bins
                    .realtime(
                        Some(&redis.url()),
                        &format!("node-{i}"),
                        &shared_machine_env(),
                    )
                    .await?,
            );
        }
        let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
        let plan = DeliveryPlan {
            kind: Kind::Realtime,
            transport: Transport::Websocket,
            label: format!("realtime {} nodes, {}/s", t.nodes, thousands(rate)),
            subscribe_nodes: addrs.clone(),
            publish_nodes: addrs,
            subscribers: t.subscribers,
            topics: (0..t.topics).map(|i| format!("bench-{i}")).collect(),
            rate,
            duration: t.duration,
            size: t.size,
            stalled: 0,
            redis_pid: Some(redis.pid()),
        };
        let watch = ProcWatch::new(nodes.iter().map(ServerProcess::pid).collect());
        let mut result = delivery::run(&plan, &watch).await?;
        result
            .notes
            .push(format!("server CPU is summed over the {} nodes; each node runs one worker thread (REALTIME_WORKER_THREADS=1) since they share this machine's cores", t.nodes));
        results.push(result);
        for node in nodes {
            node.stop().await;
        }
        drop(redis);
    }
    let params = json!({
        "nodes": t.nodes,
        "subscribers": t.subscribers,
        "topics": t.topics,
        "rates": t.rates,
        "message_size": t.size,
        "duration_s": t.duration.as_secs_f64(),
    });
    Ok(common.record("topics", params, results))
}

/// How the reading subscribers' p99 and the server's peak RSS moved against the
/// run without a stalled subscriber.
fn p99_change(base: &ServerResult, stalled: &ServerResult) -> Option<String> {
    let (b, s) = (base.latency.as_ref()?, stalled.latency.as_ref()?);
    Some(format!(
        "p99 of the reading subscribers {:+.0}% against all reading ({:.2} → {:.2} ms); peak server RSS {} → {} KiB",
        (s.p99_us / b.p99_us - 1.0) * 100.0,
        b.p99_us / 1000.0,
        s.p99_us / 1000.0,
        base.rss_peak_kib.unwrap_or(0),
        stalled.rss_peak_kib.unwrap_or(0),
    ))
}

fn single_node_plan(
    kind: Kind,
    label: &str,
    server: &ServerProcess,
    f: Fanout,
    stalled: usize,
) -> DeliveryPlan {
    fanout_plan(kind, label, server.addr, f, stalled)
}

/// One topic on one node, published to through that node.
pub(crate) fn fanout_plan(
    kind: Kind,
    label: &str,
    node: std::net::SocketAddr,
    f: Fanout,
    stalled: usize,
) -> DeliveryPlan {
    DeliveryPlan {
        kind,
        transport: Transport::Websocket,
        label: label.to_owned(),
        subscribe_nodes: vec![node],
        publish_nodes: vec![node],
        subscribers: f.subscribers,
        topics: vec!["bench".into()],
        rate: f.rate,
        duration: f.duration,
        size: f.size,
        stalled,
        redis_pid: None,
    }
}

pub(crate) fn fanout_params(f: Fanout) -> serde_json::Value {
    json!({
        "subscribers": f.subscribers,
        "rate": f.rate,
        "message_size": f.size,
        "duration_s": f.duration.as_secs_f64(),
        "offered_deliveries_per_s": f.rate * f.subscribers as f64,
    })
}

/// `5000` → `5,000`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{}", value.round() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The command that reproduces this run.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run --release -p realtime-bench -- {}",
        args.join(" ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separates_groups_of_three() {
        assert_eq!(super::thousands(5000.0), "5,000");
        assert_eq!(super::thousands(100.0), "100");
        assert_eq!(super::thousands(1234567.0), "1,234,567");
    }
}
