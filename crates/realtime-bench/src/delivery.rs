//! The measurement every delivery scenario shares (fanout, saturation, topics,
//! cross-node, slow consumer): open subscribers, publish at a fixed rate, wait for
//! the deliveries to drain, then account for every expected delivery and read the
//! server's CPU time and memory from /proc.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use realtime_core::Transport;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fleet::{self, Fleet};
use crate::procstat::{ProcWatch, Sample};
use crate::progress;
use crate::publisher::{self, PublishPlan, Published};
use crate::record::{CloseCount, Latency, ServerResult, TimelinePoint};
use crate::servers::Kind;
use crate::tracker::{Tracker, new_histogram};

/// How long deliveries may stop progressing before the drain gives up.
const QUIET: Duration = Duration::from_secs(3);
/// Upper bound of the whole drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// One delivery measurement against one server (or cluster).
#[derive(Debug, Clone)]
pub struct DeliveryPlan {
    pub kind: Kind,
    /// How the subscribers connect (SSE: our server only).
    pub transport: Transport,
    pub label: String,
    /// Nodes subscribers connect to, in turn.
    pub subscribe_nodes: Vec<SocketAddr>,
    /// Nodes the publisher posts to, in turn.
    pub publish_nodes: Vec<SocketAddr>,
    pub subscribers: usize,
    pub topics: Vec<String>,
    pub rate: f64,
    pub duration: Duration,
    pub size: usize,
    /// How many subscribers never read.
    pub stalled: usize,
    /// The private Redis of a multi-node run, whose CPU use is reported too.
    pub redis_pid: Option<u32>,
}

/// Runs `plan`, reading the server processes through `watch`.
pub async fn run(plan: &DeliveryPlan, watch: &ProcWatch) -> anyhow::Result<ServerResult> {
    let others = Others::new(plan.redis_pid);
    let members = fleet::subscribers(
        plan.kind,
        plan.transport,
        &plan.subscribe_nodes,
        &plan.topics,
        plan.subscribers,
        plan.stalled,
    );
    let bar = progress::bar(members.len() as u64, "connecting");
    let fleet = Fleet::open(members, || bar.inc(1)).await;
    bar.finish_and_clear();
    if fleet.failed > 0 {
        anyhow::bail!(
            "{}: {} of {} connections failed: {}",
            plan.label,
            fleet.failed,
            plan.subscribers,
            fleet.first_error.as_deref().unwrap_or("?")
        );
    }
    let before = watch.sample();
    let others_before = others.sample();
    let (timeline_stop, timeline) = sample_timeline(&fleet, watch.clone());
    let start = Instant::now();

    let publish = PublishPlan {
        kind: plan.kind,
        nodes: plan.publish_nodes.clone(),
        topics: plan.topics.clone(),
        rate: plan.rate,
        duration: plan.duration,
        size: plan.size,
    };
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let bar = progress::bar(total, "publishing");
    let published = publisher::run(&publish, |n| bar.set_position(n)).await;
    bar.finish_and_clear();

    let expected_live = expected_by_readers(plan, &published);
    drain(&fleet, expected_live).await;
    let window = start.elapsed();
    let after = watch.sample();
    let others_after = others.sample();
    let _ = timeline_stop.send(true);
    let timeline = timeline.await.unwrap_or_default();
    let trackers = fleet.finish().await;
    let mut server_closes = 0;
    if plan.kind == Kind::Realtime {
        for node in &plan.subscribe_nodes {
            server_closes += crate::servers::slow_consumer_closes(*node)
                .await
                .unwrap_or(0);
        }
    }
    let mut result = account(
        plan, &published, &trackers, &before, &after, window, timeline,
    );
    if server_closes > 0 {
        result.notes.push(format!(
            "the server closed {server_closes} connection(s) as slow consumers (3008, from its /metrics); a client whose socket buffers are full cannot receive the close frame and sees the connection drop (1006)"
        ));
    }
    result.notes.push(machine_load(
        after.cpu_since(&before),
        &others_before,
        &others_after,
        window,
    ));
    Ok(result)
}

/// The generator itself and the run's Redis, whose CPU shares the machine.
pub(crate) struct Others {
    generator: ProcWatch,
    redis: Option<ProcWatch>,
}

/// What else used the machine's CPU, at one instant.
pub(crate) struct OthersSample {
    generator: Sample,
    redis: Option<Sample>,
    machine_busy_s: f64,
}

impl Others {
    pub(crate) fn new(redis_pid: Option<u32>) -> Self {
        Others {
            generator: ProcWatch::new(vec![std::process::id()]),
            redis: redis_pid.map(|pid| ProcWatch::new(vec![pid])),
        }
    }

    pub(crate) fn sample(&self) -> OthersSample {
        OthersSample {
            generator: self.generator.sample(),
            redis: self.redis.as_ref().map(ProcWatch::sample),
            machine_busy_s: crate::procstat::machine_busy_s(),
        }
    }
}

/// How busy the machine was: servers, Redis, the generator and every other
/// process (other builds share this machine), in % of one core.
pub(crate) fn machine_load(
    server_cpu: f64,
    before: &OthersSample,
    after: &OthersSample,
    window: Duration,
) -> String {
    let pct = |cpu: f64| cpu / window.as_secs_f64().max(1e-6) * 100.0;
    let generator_cpu = after.generator.cpu_since(&before.generator);
    let (redis, redis_cpu) = match (&before.redis, &after.redis) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu_since(b);
            (format!(", Redis {:.0}%", pct(cpu)), cpu)
        }
        _ => (String::new(), 0.0),
    };
    let busy = (after.machine_busy_s - before.machine_busy_s).max(0.0);
    let other = (busy - server_cpu - redis_cpu - generator_cpu).max(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) * 100;
    format!(
        "CPU during the measurement (% of one core, {cores}% in all): server {:.0}%{redis}, generator {:.0}%, other processes {:.0}%",
        pct(server_cpu),
        pct(generator_cpu),
        pct(other)
    )
}

/// Deliveries expected on connections that read: accepted publishes per topic ×
/// reading subscribers of that topic.
fn expected_by_readers(plan: &DeliveryPlan, published: &Published) -> u64 {
    let topics = plan.topics.len().max(1);
    (plan.stalled..plan.subscribers)
        .map(|i| published.accepted[i % topics].len() as u64)
        .sum()
}

/// Waits until the readers got `expected` deliveries, or until deliveries stop
/// progressing for [`QUIET`] (closed connections), bounded by [`DRAIN_LIMIT`].
async fn drain(fleet: &Fleet, expected: u64) {
    let limit = Instant::now() + DRAIN_LIMIT;
    let mut last = (fleet.live.delivered.load(Ordering::Relaxed), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < limit {
        tick.tick().await;
        let now = fleet.live.delivered.load(Ordering::Relaxed);
        if now >= expected {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > QUIET {
            return;
        }
    }
}

/// Samples deliveries/s, server CPU and RSS once a second until told to stop.
fn sample_timeline(
    fleet: &Fleet,
    watch: ProcWatch,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Vec<TimelinePoint>>,
) {
    let (stop, mut stop_rx) = watch::channel(false);
    let live = fleet.live.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut points = Vec::new();
        let mut prev = (
            watch.sample(),
            live.delivered.load(Ordering::Relaxed),
            start,
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.wait_for(|s| *s) => break,
            }
            let (sample, delivered, now) = (
                watch.sample(),
                live.delivered.load(Ordering::Relaxed),
                Instant::now(),
            );
            let dt = now.duration_since(prev.2).as_secs_f64().max(1e-6);
            points.push(TimelinePoint {
                t_s: round(now.duration_since(start).as_secs_f64(), 2),
                deliveries_per_s: round((delivered - prev.1) as f64 / dt, 1),
                server_cpu_percent: round(sample.cpu_since(&prev.0) / dt * 100.0, 1),
                server_rss_kib: sample.rss_kib,
            });
            prev = (sample, delivered, now);
        }
        points
    });
    (stop, task)
}

/// Accounts for every expected delivery and builds the result.
fn account(
    plan: &DeliveryPlan,
    published: &Published,
    trackers: &[Tracker],
    before: &Sample,
    after: &Sample,
    window: Duration,
    timeline: Vec<TimelinePoint>,
) -> ServerResult {
    let mut latency = new_histogram();
    let (mut expected, mut delivered, mut lost, mut by_close, mut duplicated) = (0, 0, 0, 0, 0);
    let mut closes: BTreeMap<u16, u64> = BTreeMap::new();
    for tracker in trackers {
        let accepted = &published.accepted[tracker.topic];
        let got = accepted.iter().filter(|&&seq| tracker.has(seq)).count() as u64;
        let missing = accepted.len() as u64 - got;
        expected += accepted.len() as u64;
        delivered += got;
        duplicated += tracker.duplicated;
        // A close the server initiated (anything but our own normal close) is
        // visible to the client: what it did not get is accounted for.
        match tracker.close_code {
            Some(code) if code != 1000 && code != 1005 => {
                *closes.entry(code).or_default() += 1;
                by_close += missing;
            }
            _ => lost += missing,
        }
        if let Some(h) = &tracker.latency {
            let _ = latency.add(h);
        }
    }
    let cpu = after.cpu_since(before);
    let peak = timeline
        .iter()
        .map(|p| p.server_rss_kib)
        .chain([after.rss_kib])
        .max();
    let mut notes = Vec::new();
    if published.failed > 0 {
        notes.push(format!(
            "{} publishes were refused by the server",
            published.failed
        ));
    }
    let achieved = published.total() as f64 / published.elapsed.as_secs_f64().max(1e-6);
    if achieved < plan.rate * 0.95 {
        notes.push(format!(
            "the publisher reached {achieved:.0}/s of the {:.0}/s asked",
            plan.rate
        ));
    }
    ServerResult {
        server: plan.kind.name().to_owned(),
        label: plan.label.clone(),
        connections: plan.subscribers,
        published: Some(published.total()),
        expected: Some(expected),
        delivered: Some(delivered),
        deliveries_per_s: Some(round(delivered as f64 / window.as_secs_f64(), 1)),
        cpu_us_per_delivery: (delivered > 0).then(|| round(cpu * 1e6 / delivered as f64, 3)),
        server_cpu_s: Some(round(cpu, 3)),
        lost: Some(lost),
        duplicated: Some(duplicated),
        accounted_by_close: Some(by_close),
        closes: closes
            .into_iter()
            .map(|(code, count)| CloseCount { code, count })
            .collect(),
        latency: summarize(&latency),
        latency_buckets: buckets(&latency),
        rss_before_kib: Some(before.rss_kib),
        rss_after_kib: Some(after.rss_kib),
        rss_peak_kib: peak,
        timeline,
        notes,
        ..ServerResult::default()
    }
}

/// Percentiles of a latency histogram, in µs.
pub fn summarize(h: &hdrhistogram::Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50) as f64,
        p95_us: h.value_at_quantile(0.95) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
    })
}

/// The distribution for plots: counts per logarithmic bucket (upper bound in µs).
pub(crate) fn buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(10, 1.25)
        .map(|v| (v.value_iterated_to() as f64, v.count_since_last_iteration()))
        .filter(|(_, c)| *c > 0)
        .collect()
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (value * f).round() / f
}
