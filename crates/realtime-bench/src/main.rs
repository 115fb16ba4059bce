//! `realtime-bench`: run a benchmark scenario against our server, the bare axum
//! ceiling and the Socket.IO peer, save the run (JSON, Markdown, SVG plots) and
//! regenerate docs/BENCHMARKS.md from the saved runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use realtime_bench::history::{self, HistoryLimits, Store, Storm};
use realtime_bench::presence::{self, ChurnRun, StatsRun};
use realtime_bench::record::RunRecord;
use realtime_bench::scenarios::{self, Common, Fanout, Topics};
use realtime_bench::servers::{Binaries, Kind};
use realtime_bench::transports::{self, TransportRun};
use realtime_bench::{docs, machine};

#[derive(Debug, Parser)]
#[command(name = "realtime-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open N idle authenticated connections: RSS per connection, handshakes/s.
    Idle {
        #[arg(long)]
        connections: Option<usize>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N subscribers on one topic, publishes at a fixed rate (below saturation).
    Fanout(FanoutArgs),
    /// Fan-out at 4× the fanout load: throughput and accounting of every message.
    Saturation(FanoutArgs),
    /// Several nodes over Redis, subscribers spread over topics, several rates.
    Topics {
        #[arg(long)]
        nodes: Option<usize>,
        #[arg(long)]
        subscribers: Option<usize>,
        #[arg(long)]
        topics: Option<usize>,
        /// Publishes per second, comma-separated; one measurement each.
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        #[arg(long)]
        size: Option<usize>,
        #[arg(long, value_parser = humantime_secs)]
        duration: Option<Duration>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Subscribers on node B, publisher on node A via Redis, against one node.
    CrossNode(FanoutArgs),
    /// One subscriber that stops reading among N.
    SlowConsumer(FanoutArgs),
    /// Fanout on one node with the topic's history off, then on, per store.
    HistoryFanout {
        #[command(flatten)]
        fanout: FanoutArgs,
        #[command(flatten)]
        history: HistoryArgs,
        /// Off/on pairs per store, in alternating order; the headline takes the
        /// medians. [default: 3, or 1 with --quick]
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// Clients of a history topic drop at once, miss messages, reconnect at once
    /// with `since`: time until all caught up, nothing lost or duplicated.
    RecoveryStorm {
        #[arg(long)]
        clients: Option<usize>,
        /// Messages published while the clients are away.
        #[arg(long)]
        behind: Option<u64>,
        /// Messages published live during the reconnect.
        #[arg(long)]
        live: Option<u64>,
        /// Rate of the live messages, per second.
        #[arg(long)]
        live_rate: Option<f64>,
        #[arg(long)]
        size: Option<usize>,
        #[command(flatten)]
        history: HistoryArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// A topic of many members (one connection each) and one of a few: the
    /// round trip of `presence_stats` and of a first `presence` page, over
    /// WebSocket and HTTP, per store.
    PresenceStats {
        /// Connections subscribed to the large topic. [default: 15000, or 500
        /// with --quick]
        #[arg(long)]
        members: Option<usize>,
        /// Connections subscribed to the small topic, the yardstick. [default:
        /// 200, or 150 with --quick]
        #[arg(long)]
        few: Option<usize>,
        /// Questions timed per block. [default: 5000, or 200 with --quick]
        #[arg(long)]
        questions: Option<usize>,
        #[command(flatten)]
        stores: StoreArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Join/leave churn on one topic with watchers, presence on (join_leave)
    /// against off: server CPU per 1,000 pairs, per store.
    PresenceChurn {
        /// Join/leave pairs started per second. [default: 200, or 50 with --quick]
        #[arg(long)]
        rate: Option<f64>,
        /// How long to churn. [default: 30s, or 3s with --quick]
        #[arg(long, value_parser = humantime_secs)]
        duration: Option<Duration>,
        /// Connections subscribed throughout. [default: 10, or 3 with --quick]
        #[arg(long)]
        watchers: Option<usize>,
        /// Off/on pairs per store, in alternating order; the headline takes the
        /// medians. [default: 3, or 1 with --quick]
        #[arg(long)]
        rounds: Option<usize>,
        #[command(flatten)]
        stores: StoreArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The same fanout and idle load over WebSocket and over SSE, side by side
    /// on one server binary: server CPU per delivery and RSS per idle connection
    /// of each transport.
    Sse {
        #[command(flatten)]
        fanout: FanoutArgs,
        /// Idle connections per transport. [default: 15000, or 300 with --quick]
        #[arg(long)]
        connections: Option<usize>,
        /// WebSocket/SSE pairs of each measurement, in alternating order; the
        /// headline takes the medians. [default: 3, or 1 with --quick]
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// Every scenario in turn, then the report.
    All {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Regenerate docs/BENCHMARKS.md (and the plots) from the saved JSON.
    Report {
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        docs: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Clone)]
struct RunArgs {
    /// A smoke run that finishes in under a minute: small numbers, results saved
    /// outside the repository, and a failure exit if any message is lost.
    #[arg(long)]
    quick: bool,
    /// Servers to measure side by side: realtime, ceiling, socketio.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Where runs are saved. [default: crates/realtime-bench/results, or a temp
    /// directory with --quick]
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
struct FanoutArgs {
    #[arg(long)]
    subscribers: Option<usize>,
    /// Publishes per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Message size in bytes.
    #[arg(long)]
    size: Option<usize>,
    /// How long to publish, e.g. `20s`.
    #[arg(long, value_parser = humantime_secs)]
    duration: Option<Duration>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args, Clone)]
struct HistoryArgs {
    /// Stores to measure side by side: memory, redis (one node on a private
    /// redis-server).
    #[arg(long, value_delimiter = ',')]
    stores: Vec<String>,
    /// `history_size` of the topic's namespace.
    #[arg(long, default_value_t = 1000)]
    history_size: u64,
    /// `history_ttl` of the topic's namespace.
    #[arg(long, default_value = "10m")]
    history_ttl: String,
}

#[derive(Debug, Args, Clone, Default)]
struct StoreArgs {
    /// Presence stores to measure side by side: memory, redis (one node on a
    /// private redis-server).
    #[arg(long, value_delimiter = ',')]
    stores: Vec<String>,
}

impl StoreArgs {
    fn stores(&self) -> anyhow::Result<Vec<Store>> {
        match self.stores.is_empty() {
            true => Ok(vec![Store::Memory, Store::Redis]),
            false => self.stores.iter().map(|s| Store::parse(s)).collect(),
        }
    }
}

impl HistoryArgs {
    fn default() -> Self {
        HistoryArgs {
            stores: Vec::new(),
            history_size: 1000,
            history_ttl: "10m".into(),
        }
    }

    fn stores(&self) -> anyhow::Result<Vec<Store>> {
        match self.stores.is_empty() {
            true => Ok(vec![Store::Memory, Store::Redis]),
            false => self.stores.iter().map(|s| Store::parse(s)).collect(),
        }
    }

    fn limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size,
            ttl: self.history_ttl.clone(),
        }
    }
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("`{s}` is not a number of seconds: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("realtime-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("realtime-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; `Ok(false)` when a quick run found lost or duplicated messages.
async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Report { results, docs } => {
            let results = results.unwrap_or_else(default_results);
            let docs = docs.unwrap_or_else(|| workspace().join("docs/BENCHMARKS.md"));
            docs::regenerate(&results, &docs)?;
            eprintln!("wrote {}", docs.display());
            Ok(true)
        }
        Command::All { run } => {
            let mut ok = true;
            for scenario in docs::ORDER {
                ok &= one(scenario_command(scenario, run.clone()), true).await?;
            }
            if !run.quick {
                let out = run.out.clone().unwrap_or_else(default_results);
                docs::regenerate(&out, &workspace().join("docs/BENCHMARKS.md"))?;
            }
            Ok(ok)
        }
        other => one(other, false).await,
    }
}

fn scenario_command(name: &str, run: RunArgs) -> Command {
    let fanout = FanoutArgs {
        subscribers: None,
        rate: None,
        size: None,
        duration: None,
        run: run.clone(),
    };
    match name {
        "idle" => Command::Idle {
            connections: None,
            run,
        },
        "fanout" => Command::Fanout(fanout),
        "saturation" => Command::Saturation(fanout),
        "topics" => Command::Topics {
            nodes: None,
            subscribers: None,
            topics: None,
            rates: Vec::new(),
            size: None,
            duration: None,
            run,
        },
        "cross-node" => Command::CrossNode(fanout),
        "history-fanout" => Command::HistoryFanout {
            fanout,
            history: HistoryArgs::default(),
            rounds: None,
        },
        "recovery-storm" => Command::RecoveryStorm {
            clients: None,
            behind: None,
            live: None,
            live_rate: None,
            size: None,
            history: HistoryArgs::default(),
            run,
        },
        "presence-stats" => Command::PresenceStats {
            members: None,
            few: None,
            questions: None,
            stores: StoreArgs::default(),
            run,
        },
        "presence-churn" => Command::PresenceChurn {
            rate: None,
            duration: None,
            watchers: None,
            rounds: None,
            stores: StoreArgs::default(),
            run,
        },
        "sse" => Command::Sse {
            fanout,
            connections: None,
            rounds: None,
        },
        _ => Command::SlowConsumer(fanout),
    }
}

/// Runs one scenario and saves its record. Run as part of `all`, the record names
/// the scenario's own command, so each can be rerun alone.
async fn one(command: Command, via_all: bool) -> anyhow::Result<bool> {
    let (mut record, run) = match command {
        Command::Idle { connections, run } => {
            let common = common(&run, &["realtime", "ceiling", "socketio"])?;
            let n = connections.unwrap_or(if run.quick { 300 } else { 15_000 });
            check_open_files(n)?;
            (scenarios::idle(&common, n).await?, run)
        }
        Command::Fanout(f) => {
            let common = common(&f.run, &["realtime", "ceiling", "socketio"])?;
            let params = fanout(&f, (5000, 20.0, 20), (200, 20.0, 3))?;
            (scenarios::fanout(&common, "fanout", params).await?, f.run)
        }
        Command::Saturation(f) => {
            let common = common(&f.run, &["realtime", "ceiling", "socketio"])?;
            let params = fanout(&f, (5000, 80.0, 20), (200, 80.0, 3))?;
            (
                scenarios::fanout(&common, "saturation", params).await?,
                f.run,
            )
        }
        Command::CrossNode(f) => {
            let common = common(&f.run, &["realtime"])?;
            let params = fanout(&f, (1000, 20.0, 20), (100, 20.0, 3))?;
            (scenarios::cross_node(&common, params).await?, f.run)
        }
        Command::SlowConsumer(f) => {
            let common = common(&f.run, &["realtime", "ceiling"])?;
            let mut params = fanout(&f, (200, 200.0, 20), (100, 50.0, 3))?;
            // Large messages, so the stalled subscriber overflows its queue within
            // the run and its end (3008) is measured, not just its silence.
            params.size = f.size.unwrap_or(4096);
            (scenarios::slow_consumer(&common, params).await?, f.run)
        }
        Command::Topics {
            nodes,
            subscribers,
            topics,
            rates,
            size,
            duration,
            run,
        } => {
            let common = common(&run, &["realtime"])?;
            let q = run.quick;
            let t = Topics {
                nodes: nodes.unwrap_or(3),
                subscribers: subscribers.unwrap_or(if q { 90 } else { 900 }),
                topics: topics.unwrap_or(if q { 10 } else { 100 }),
                rates: match rates.is_empty() {
                    false => rates,
                    true if q => vec![200.0],
                    true => vec![1000.0, 5000.0],
                },
                size: size.unwrap_or(100),
                duration: duration.unwrap_or(Duration::from_secs(if q { 3 } else { 20 })),
            };
            check_open_files(t.subscribers)?;
            (scenarios::topics(&common, &t).await?, run)
        }
        Command::HistoryFanout {
            fanout: f,
            history,
            rounds,
        } => {
            let common = common(&f.run, &["realtime"])?;
            let params = fanout(&f, (5000, 20.0, 10), (200, 20.0, 1))?;
            let rounds = rounds.unwrap_or(if f.run.quick { 1 } else { 3 });
            let record = history::history_fanout(
                &common,
                params,
                &history.stores()?,
                &history.limits(),
                rounds,
            )
            .await?;
            (record, f.run)
        }
        Command::RecoveryStorm {
            clients,
            behind,
            live,
            live_rate,
            size,
            history,
            run,
        } => {
            let common = common(&run, &["realtime"])?;
            let q = run.quick;
            let storm = Storm {
                clients: clients.unwrap_or(if q { 100 } else { 1000 }),
                behind: behind.unwrap_or(100),
                warmup: 10,
                live: live.unwrap_or(if q { 10 } else { 40 }),
                live_rate: live_rate.unwrap_or(20.0),
                size: size.unwrap_or(100),
                history: history.limits(),
                stores: history.stores()?,
            };
            check_open_files(storm.clients)?;
            (history::recovery_storm(&common, &storm).await?, run)
        }
        Command::PresenceStats {
            members,
            few,
            questions,
            stores,
            run,
        } => {
            let common = common(&run, &["realtime"])?;
            let q = run.quick;
            let s = StatsRun {
                members: members.unwrap_or(if q { 500 } else { 15_000 }),
                few: few.unwrap_or(if q { 150 } else { 200 }),
                questions: questions.unwrap_or(if q { 200 } else { 5000 }),
                stores: stores.stores()?,
            };
            check_open_files(s.members + s.few)?;
            (presence::presence_stats(&common, &s).await?, run)
        }
        Command::PresenceChurn {
            rate,
            duration,
            watchers,
            rounds,
            stores,
            run,
        } => {
            let common = common(&run, &["realtime"])?;
            let q = run.quick;
            let c = ChurnRun {
                rate: rate.unwrap_or(if q { 50.0 } else { 200.0 }),
                duration: duration.unwrap_or(Duration::from_secs(if q { 3 } else { 30 })),
                watchers: watchers.unwrap_or(if q { 3 } else { 10 }),
                rounds: rounds.unwrap_or(if q { 1 } else { 3 }),
                stores: stores.stores()?,
            };
            (presence::presence_churn(&common, &c).await?, run)
        }
        Command::Sse {
            fanout: f,
            connections,
            rounds,
        } => {
            let common = common(&f.run, &["realtime"])?;
            let q = f.run.quick;
            let t = TransportRun {
                fanout: fanout(&f, (5000, 20.0, 10), (200, 20.0, 3))?,
                idle: connections.unwrap_or(if q { 300 } else { 15_000 }),
                rounds: rounds.unwrap_or(if q { 1 } else { 3 }),
            };
            check_open_files(t.idle)?;
            (transports::sse(&common, &t).await?, f.run)
        }
        Command::All { .. } | Command::Report { .. } => unreachable!("handled by run"),
    };
    if via_all {
        let quick = if run.quick { " --quick" } else { "" };
        record.command = format!(
            "cargo run --release -p realtime-bench -- {}{quick}",
            record.scenario
        );
    }
    let out = run.out.clone().unwrap_or_else(|| match run.quick {
        true => std::env::temp_dir().join("realtime-bench-quick"),
        false => default_results(),
    });
    for path in docs::write_run_outputs(&record, &out)? {
        eprintln!("wrote {}", path.display());
    }
    print_summary(&record);
    Ok(!run.quick || clean(&record))
}

/// A quick run passes when every connection opened, no message was lost or
/// duplicated, history streams kept offset order, every resubscription
/// recovered when the history held everything it missed, and every presence
/// answer agreed with the generator's tally.
fn clean(record: &RunRecord) -> bool {
    let history_holds_all = match (
        record.params["history_size"].as_u64(),
        record.params["behind"].as_u64(),
        record.params["warmup"].as_u64(),
    ) {
        (Some(size), Some(behind), Some(warmup)) => size >= behind + warmup,
        _ => false,
    };
    let mut ok = true;
    for r in &record.results {
        let (lost, dup) = (r.lost.unwrap_or(0), r.duplicated.unwrap_or(0));
        let order = r.offset_errors.unwrap_or(0);
        let unrecovered = if history_holds_all {
            r.not_recovered.unwrap_or(0)
        } else {
            0
        };
        let mismatches = r.tally_mismatches.unwrap_or(0);
        if lost > 0
            || dup > 0
            || r.failed_connections > 0
            || order > 0
            || unrecovered > 0
            || mismatches > 0
        {
            eprintln!(
                "{} / {}: {lost} lost, {dup} duplicated, {} connections failed, {order} out of offset order, {unrecovered} not recovered, {mismatches} presence mismatches",
                record.scenario, r.label, r.failed_connections
            );
            ok = false;
        }
    }
    ok
}

fn print_summary(record: &RunRecord) {
    for r in &record.results {
        let mut line = format!("{:>14} | {:<32}", record.scenario, r.label);
        if let Some(v) = r.handshakes_per_s {
            line += &format!(" handshakes/s {v:.0}");
        }
        if let Some(v) = r.rss_per_connection_kib {
            line += &format!(" RSS/conn {v:.2} KiB");
        }
        if let Some(v) = r.deliveries_per_s {
            line += &format!(" deliveries/s {v:.0}");
        }
        if let Some(v) = r.cpu_us_per_delivery {
            line += &format!(" CPU/delivery {v:.2} µs");
        }
        if let Some(l) = &r.latency {
            line += &format!(
                " p50 {:.2} ms p99 {:.2} ms",
                l.p50_us / 1000.0,
                l.p99_us / 1000.0
            );
        }
        if let (Some(lost), Some(dup)) = (r.lost, r.duplicated) {
            line += &format!(" lost {lost} dup {dup}");
        }
        if let (Some(yes), Some(no)) = (r.recovered, r.not_recovered) {
            line += &format!(" recovered {yes} not {no}");
        }
        if let Some(ms) = r.all_caught_up_ms {
            line += &format!(" all caught up in {ms:.0} ms");
        }
        if let Some(v) = r.cpu_us_per_answer {
            line += &format!(" CPU/answer {v:.1} µs");
        }
        if let (Some(pairs), Some(v)) = (r.pairs, r.cpu_s_per_1000_pairs) {
            line += &format!(" pairs {pairs} CPU/1,000 pairs {v:.3} s");
        }
        if let Some(n) = r.tally_mismatches {
            line += &format!(" mismatches {n}");
        }
        println!("{line}");
    }
}

/// Fan-out parameters: the flags given, else the full or quick defaults.
fn fanout(
    f: &FanoutArgs,
    full: (usize, f64, u64),
    quick: (usize, f64, u64),
) -> anyhow::Result<Fanout> {
    let (subs, rate, secs) = if f.run.quick { quick } else { full };
    let subscribers = f.subscribers.unwrap_or(subs);
    check_open_files(subscribers)?;
    Ok(Fanout {
        subscribers,
        rate: f.rate.unwrap_or(rate),
        size: f.size.unwrap_or(100),
        duration: f.duration.unwrap_or(Duration::from_secs(secs)),
    })
}

fn common(run: &RunArgs, default_servers: &[&str]) -> anyhow::Result<Common> {
    let names: Vec<&str> = match run.servers.is_empty() {
        true => default_servers.to_vec(),
        false => run.servers.iter().map(String::as_str).collect(),
    };
    Ok(Common {
        quick: run.quick,
        servers: names
            .into_iter()
            .map(Kind::parse)
            .collect::<anyhow::Result<_>>()?,
        bins: Binaries::locate()?,
    })
}

/// The generator holds one file per connection (and so does a server under test):
/// say where the limit bites instead of failing connections half-way.
fn check_open_files(connections: usize) -> anyhow::Result<()> {
    let limit = machine::open_files_limit();
    if connections as u64 + 256 > limit {
        anyhow::bail!(
            "{connections} connections need more open files than this process may hold ({limit}); \
             lower --connections or --subscribers, or raise `ulimit -n`; one generator process holds them all"
        );
    }
    Ok(())
}

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn default_results() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"))
}
