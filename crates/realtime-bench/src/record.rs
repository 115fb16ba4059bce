//! What one benchmark run produced, as saved to JSON: the machine, the exact command,
//! the parameters and one result per server measured side by side.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One run of one scenario, saved as `<results dir>/<scenario>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The scenario's name, as on the command line (see `docs::ORDER`).
    pub scenario: String,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// The command line that produced this record, to rerun it.
    pub command: String,
    /// Whether the run was a `--quick` smoke run (too short to quote).
    pub quick: bool,
    pub machine: Machine,
    /// Scenario parameters (subscribers, rate, message size, duration, ...).
    pub params: serde_json::Value,
    /// One entry per server measured, in the order they ran.
    pub results: Vec<ServerResult>,
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// Soft limit on open files per process during the run.
    pub open_files_limit: u64,
}

/// The figures of one server in one scenario. Fields a scenario does not measure are
/// `None` and left out of the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerResult {
    /// `realtime`, `ceiling` or `socketio`.
    pub server: String,
    /// Human label for tables, e.g. `realtime (3 nodes, Redis)`.
    pub label: String,
    /// The transport the generator's connections used (`websocket`, `sse`), in
    /// scenarios that compare transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Connections the generator held during the measurement.
    pub connections: usize,
    /// Connections that failed to open.
    #[serde(default)]
    pub failed_connections: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes_per_s: Option<f64>,
    /// Server RSS growth per connection (KiB): RSS after minus RSS before connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_kib: Option<f64>,
    /// Server RSS before the first connection and at the end of the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_before_kib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_after_kib: Option<u64>,
    /// Peak server RSS seen during the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_peak_kib: Option<u64>,
    /// Messages the publisher sent (accepted by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    /// Deliveries the subscribers could receive: published × subscribers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// Deliveries received by the generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    /// Server CPU time (user + system, all threads) divided by deliveries, in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_delivery: Option<f64>,
    /// Server CPU time over the measurement, in seconds, summed over its processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// Expected deliveries that never arrived on a connection that stayed open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Deliveries that arrived more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicated: Option<u64>,
    /// Expected deliveries not made because the server closed the connection as a
    /// slow consumer (documented and visible to the client: not silent loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounted_by_close: Option<u64>,
    /// Expected deliveries a client was told it missed (`recovered:false` or a
    /// `missed` notice naming the range): visible to the client, not silent loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounted_by_notice: Option<u64>,
    /// Deliveries out of offset order on a history topic: an offset repeated or
    /// skipped, or an epoch change, seen by the generator's own tally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_errors: Option<u64>,
    /// Resubscriptions with `since` answered `recovered:true` / `recovered:false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_recovered: Option<u64>,
    /// Per client, from the start of its reconnect to having every publication it
    /// missed, in µs (same shape as latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<Latency>,
    /// From the moment every client reconnects at once until the last one caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_caught_up_ms: Option<f64>,
    /// Presence: server CPU per answered question, in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_answer: Option<f64>,
    /// Presence churn: join/leave pairs made (connect, subscribe, leave, close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<u64>,
    /// Presence churn: server CPU seconds per 1,000 join/leave pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_1000_pairs: Option<f64>,
    /// Presence: answers (counts, pages, join/leave frames) that disagreed with
    /// the generator's own tally of who it connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally_mismatches: Option<u64>,
    /// Connections the server closed during the run, by close code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closes: Vec<CloseCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Latency distribution for plots: (upper bound in µs, count) buckets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<(f64, u64)>,
    /// One point per second of the measurement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
    /// What limits or qualifies this figure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How many connections were closed with one close code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloseCount {
    pub code: u16,
    pub count: u64,
}

/// End-to-end latency (publisher's send to subscriber's receive), in µs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// One second of a measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the measurement started.
    pub t_s: f64,
    pub deliveries_per_s: f64,
    /// Server CPU use over that second, in percent of one core.
    pub server_cpu_percent: f64,
    pub server_rss_kib: u64,
}

impl RunRecord {
    /// The file a record of `scenario` is saved to under `dir`.
    pub fn path(dir: &Path, scenario: &str) -> PathBuf {
        dir.join(format!("{scenario}.json"))
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = Self::path(dir, &self.scenario);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        Ok(path)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// The result of `server`, if it was measured.
    pub fn result(&self, server: &str) -> Option<&ServerResult> {
        self.results.iter().find(|r| r.server == server)
    }
}
