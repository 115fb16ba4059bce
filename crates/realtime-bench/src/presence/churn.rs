//! presence-churn: connections join and leave one topic at a steady rate
//! (connect, subscribe, then half unsubscribe before closing and half just
//! close) while a few watchers stay subscribed, against a node whose namespace
//! keeps presence with join/leave frames and against the same namespace
//! without presence. The figure is the server's CPU seconds per 1,000
//! join/leave pairs; the watchers' own tally checks that every join and leave
//! reached each of them exactly once, and the topic's counts return to the
//! watchers alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::members;
use super::node::{Node, Presence};
use super::query::{HttpAsker, Refused, WsAsker};
use crate::client::{self, ConnSpec, HANDSHAKE, Socket};
use crate::delivery::{Others, machine_load, round};
use crate::history::Store;
use crate::procstat::ProcWatch;
use crate::progress;
use crate::record::{RunRecord, ServerResult};
use crate::scenarios::{Common, thousands};
use crate::servers::Kind;

/// The topic every churner joins and every watcher watches.
pub const TOPIC: &str = "churn";
/// User groups: churners' and watchers' user ids start with these.
const CHURNERS: &str = "c";
const WATCHERS: &str = "w";
/// Churners in their handshake, subscribe or leave at once, at most.
const IN_FLIGHT: usize = 256;
/// Upper bound of each wait after the churn (connections closed, frames in).
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound for the topic's counts to show the watchers alone.
const COUNTS_LIMIT: Duration = Duration::from_secs(10);

/// Parameters of presence-churn.
#[derive(Debug, Clone)]
pub struct ChurnRun {
    /// Join/leave pairs started per second.
    pub rate: f64,
    pub duration: Duration,
    pub watchers: usize,
    pub stores: Vec<Store>,
    /// Off/on pairs per store, in alternating order.
    pub rounds: usize,
}

/// The label of one measurement; the headline and medians read it.
pub fn label(store: &str, presence: bool, round: usize, rounds: usize) -> String {
    let state = match presence {
        true => "presence on, join_leave",
        false => "presence off",
    };
    match rounds {
        0 | 1 => format!("realtime ({store} store, {state})"),
        _ => format!("realtime ({store} store, {state}, round {round})"),
    }
}

fn presence_on(r: &ServerResult) -> bool {
    r.label.contains("presence on")
}

pub async fn presence_churn(common: &Common, c: &ChurnRun) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for round in 1..=c.rounds.max(1) {
        for &store in &c.stores {
            let order = match round % 2 {
                1 => [Presence::Off, Presence::JoinLeave],
                _ => [Presence::JoinLeave, Presence::Off],
            };
            let mut pair = Vec::new();
            for presence in order {
                let on = presence != Presence::Off;
                let label = label(store.name(), on, round, c.rounds);
                eprintln!("presence-churn: {label}, {}/s for {:?}", c.rate, c.duration);
                let node = super::node::start(&common.bins, store, &[TOPIC], presence).await?;
                let measured = measure(&node, c, &label, on).await;
                node.stop().await;
                pair.push(measured?);
            }
            if presence_on(&pair[0]) {
                pair.swap(0, 1);
            }
            if let (Some(off), Some(on)) =
                (pair[0].cpu_s_per_1000_pairs, pair[1].cpu_s_per_1000_pairs)
                && off > 0.0
            {
                pair[1].notes.insert(
                    0,
                    format!(
                        "presence on ÷ off in this round: server CPU per 1,000 pairs {:.2}× ({off:.3} → {on:.3} s)",
                        on / off
                    ),
                );
            }
            results.extend(pair);
        }
    }
    if c.rounds > 1 {
        for &store in &c.stores {
            let Some((off, on)) = medians(&results, store.name()) else {
                continue;
            };
            if let Some(last) = results
                .iter_mut()
                .rev()
                .find(|r| r.label.contains(&format!("{} store", store.name())))
            {
                last.notes.insert(0, format!(
                    "median over {} rounds of server CPU per 1,000 pairs: presence off {off:.3} s, on {on:.3} s ({:.2}×)",
                    c.rounds,
                    on / off
                ));
            }
        }
    }
    let params = json!({
        "rate_pairs_per_s": c.rate,
        "duration_s": c.duration.as_secs_f64(),
        "watchers": c.watchers,
        "stores": c.stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "rounds": c.rounds,
    });
    Ok(common.record("presence-churn", params, results))
}

/// The median CPU per 1,000 pairs of `store` with presence off and on.
pub(crate) fn medians(results: &[ServerResult], store: &str) -> Option<(f64, f64)> {
    let of = |on: bool| {
        let mut values: Vec<f64> = results
            .iter()
            .filter(|r| r.label.contains(&format!("{store} store")) && presence_on(r) == on)
            .filter_map(|r| r.cpu_s_per_1000_pairs)
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

/// What the watchers share: every join/leave frame about a churner, per
/// watcher, and a wake-up for whoever waits on them.
struct Seen {
    /// Per watcher: connection id → (joins, leaves).
    frames: Vec<std::sync::Mutex<HashMap<String, (u64, u64)>>>,
    /// Join/leave frames about churners received by all watchers.
    count: AtomicU64,
    changed: Notify,
}

/// The fields of a server frame the watchers look at.
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    topic: Option<String>,
    user_id: Option<String>,
    connection_id: Option<String>,
}

async fn measure(
    node: &Node,
    c: &ChurnRun,
    label: &str,
    presence: bool,
) -> anyhow::Result<ServerResult> {
    let addr = node.server.addr;
    let seen = Arc::new(Seen {
        frames: (0..c.watchers).map(|_| Default::default()).collect(),
        count: AtomicU64::new(0),
        changed: Notify::new(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut watchers = Vec::new();
    for (i, token) in members::tokens(WATCHERS, c.watchers)
        .into_iter()
        .enumerate()
    {
        let spec = spec(addr, i, token, Some(TOPIC));
        let ws = client::open(&spec)
            .await
            .with_context(|| format!("{label}: watcher {i}"))?;
        watchers.push(tokio::spawn(watch_topic(
            ws,
            i,
            seen.clone(),
            stop_rx.clone(),
        )));
    }
    let token = members::tokens("asker", 1).remove(0);
    let mut asker = WsAsker::connect(addr, c.watchers, token).await?;
    let http = HttpAsker::new(addr);
    let held = c.watchers as u64 + 1;
    let mut notes = Vec::new();
    let mut mismatches = 0;
    if presence {
        mismatches += check_counts(&mut asker, c.watchers, true, "before", &mut notes).await?;
    }

    let watch = ProcWatch::new(vec![node.server.pid()]);
    let others = Others::new(node.redis_pid());
    let (before, others_before) = (watch.sample(), others.sample());
    let start = Instant::now();
    let outcomes = churn(addr, c, c.watchers + 1).await;
    let churned = start.elapsed();
    let ok: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let failed = outcomes.len() - ok.len();
    let closed = wait_connections(&http, held).await;
    let frames_in = match presence {
        true => wait_frames(&seen, 2 * ok.len() as u64 * c.watchers as u64).await,
        false => true,
    };
    let window = start.elapsed();
    let (after, others_after) = (watch.sample(), others.sample());

    mismatches += failed as u64;
    if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
        notes.push(format!("{failed} churners failed; first error: {e}"));
    }
    if !closed {
        mismatches += 1;
        notes.push(format!(
            "the server still counted other connections than the {held} held {WAIT_LIMIT:?} after the churn"
        ));
    }
    let tally = tally(&seen, &ok, presence);
    mismatches += tally.strangers;
    if !frames_in {
        notes.push(format!(
            "the watchers had not received every join and leave {WAIT_LIMIT:?} after the churn"
        ));
    }
    mismatches += check_counts(&mut asker, c.watchers, presence, "after", &mut notes).await?;
    asker.close().await;
    let _ = stop.send(true);
    for w in watchers {
        let _ = w.await;
    }

    let cpu = after.cpu_since(&before);
    let pairs = ok.len() as u64;
    notes.push(format!(
        "{} pairs in {:.1} s ({:.0}/s of the {}/s asked); half the churners unsubscribed before closing, half closed without; a pair's CPU includes its TCP and WebSocket handshake and the JWT check",
        thousands(pairs as f64),
        churned.as_secs_f64(),
        pairs as f64 / churned.as_secs_f64().max(1e-6),
        c.rate
    ));
    if presence {
        notes.push(format!(
            "{} watchers subscribed throughout: each got every churner's join and leave ({} expected in all, {} received, {} missing, {} repeated)",
            c.watchers,
            thousands(tally.expected as f64),
            thousands(tally.received as f64),
            tally.missing,
            tally.repeated
        ));
    } else if tally.received + tally.strangers == 0 {
        notes.push(format!(
            "{} watchers subscribed throughout received no join or leave frame, as a topic without presence must",
            c.watchers
        ));
    }
    if tally.strangers > 0 {
        notes.push(format!(
            "{} join/leave frames the watchers should not have had (a connection that never churned, or a topic without join_leave)",
            tally.strangers
        ));
    }
    notes.push(machine_load(cpu, &others_before, &others_after, window));
    notes.push("server CPU covers the churn until every connection was closed (the server's `realtime_connections` gauge) and, with join_leave, every watcher had every leave".into());
    if node.redis.is_some() {
        notes.push("server CPU is the node's alone; Redis's is in the machine load note".into());
    }
    Ok(ServerResult {
        server: "realtime".into(),
        label: label.to_owned(),
        connections: c.watchers,
        failed_connections: failed,
        pairs: Some(pairs),
        server_cpu_s: Some(round(cpu, 3)),
        cpu_s_per_1000_pairs: (pairs > 0).then(|| round(cpu * 1000.0 / pairs as f64, 4)),
        expected: presence.then_some(tally.expected),
        delivered: presence.then_some(tally.received),
        lost: presence.then_some(tally.missing),
        duplicated: presence.then_some(tally.repeated),
        tally_mismatches: Some(mismatches),
        rss_peak_kib: Some(after.rss_kib),
        notes,
        ..ServerResult::default()
    })
}

fn spec(
    server: std::net::SocketAddr,
    index: usize,
    token: String,
    topic: Option<&str>,
) -> ConnSpec {
    ConnSpec {
        kind: Kind::Realtime,
        server,
        index,
        token: Some(token),
        topic: topic.map(str::to_owned),
        recv_buffer: None,
    }
}

/// A watcher: records every join/leave frame about a churner on [`TOPIC`].
async fn watch_topic(
    mut ws: Socket,
    index: usize,
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
) {
    let prefix = format!("{CHURNERS}-");
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        let join = match frame.kind.as_str() {
            "join" => true,
            "leave" => false,
            _ => continue,
        };
        if frame.topic.as_deref() != Some(TOPIC)
            || !frame
                .user_id
                .as_deref()
                .is_some_and(|u| u.starts_with(&prefix))
        {
            continue;
        }
        let id = frame.connection_id.unwrap_or_default();
        if let Ok(mut frames) = seen.frames[index].lock() {
            let entry = frames.entry(id).or_default();
            match join {
                true => entry.0 += 1,
                false => entry.1 += 1,
            }
        }
        seen.count.fetch_add(1, Ordering::Relaxed);
        seen.changed.notify_waiters();
    }
    let _ = ws.close(None).await;
}

/// Starts `c.rate` churners a second for `c.duration` and waits for them all;
/// each ends with its connection id, or why it failed.
async fn churn(
    server: std::net::SocketAddr,
    c: &ChurnRun,
    first_index: usize,
) -> Vec<Result<String, String>> {
    let total = (c.rate * c.duration.as_secs_f64()).round() as usize;
    let tokens = members::tokens(CHURNERS, total);
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / c.rate.max(0.001)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let bar = progress::bar(total as u64, "churning");
    let mut tasks: Vec<JoinHandle<Result<String, String>>> = Vec::with_capacity(total);
    for (i, token) in tokens.into_iter().enumerate() {
        ticks.tick().await;
        let permit = gate.clone().acquire_owned().await;
        let spec = spec(server, first_index + i, token, None);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            tokio::time::timeout(4 * HANDSHAKE, join_and_leave(&spec, i % 2 == 0))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| format!("{e:#}")))
        }));
        bar.inc(1);
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    bar.finish_and_clear();
    outcomes
}

/// One pair: connect, subscribe, then unsubscribe and close or just close;
/// waits for the server's close so the leave is the server's to make.
async fn join_and_leave(spec: &ConnSpec, unsubscribe: bool) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Welcome {
        connection_id: String,
    }
    let (mut ws, welcome) = client::connect_welcomed(spec).await?;
    let id = serde_json::from_str::<Welcome>(&welcome)
        .context("the welcome frame has no connection_id")?
        .connection_id;
    ws.send(Message::text(format!(
        r#"{{"action":"subscribe","topic":"{TOPIC}","ref":"s"}}"#
    )))
    .await?;
    answered(&mut ws, "subscribed").await?;
    if unsubscribe {
        ws.send(Message::text(format!(
            r#"{{"action":"unsubscribe","topic":"{TOPIC}","ref":"u"}}"#
        )))
        .await?;
        answered(&mut ws, "unsubscribed").await?;
    }
    ws.close(None).await?;
    while let Some(Ok(_)) = ws.next().await {}
    Ok(id)
}

/// Reads until the answer of type `kind` (join/leave frames of other churners
/// may come first); an error frame fails.
async fn answered(ws: &mut Socket, kind: &str) -> anyhow::Result<()> {
    let wanted = format!(r#""type":"{kind}""#);
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            if text.contains(&wanted) {
                return Ok(());
            }
            if text.contains(r#""type":"error""#) {
                bail!("server error: {text}");
            }
        }
    }
    bail!("the connection ended before `{kind}`")
}

/// Waits until the node counts only the `held` connections again, polling its
/// /metrics (the only way to see it), bounded by [`WAIT_LIMIT`].
async fn wait_connections(http: &HttpAsker, held: u64) -> bool {
    let limit = Instant::now() + WAIT_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < limit {
        tick.tick().await;
        if http.open_connections().await.is_ok_and(|n| n == held) {
            return true;
        }
    }
    false
}

/// Waits until the watchers hold `expected` join/leave frames about churners.
async fn wait_frames(seen: &Seen, expected: u64) -> bool {
    let limit = Instant::now() + WAIT_LIMIT;
    loop {
        // Registered before the check, so a frame counted right after it wakes us.
        let changed = seen.changed.notified();
        if seen.count.load(Ordering::Relaxed) >= expected {
            return true;
        }
        if tokio::time::timeout_at(limit, changed).await.is_err() {
            return false;
        }
    }
}

/// The watchers' frames against the churners that completed.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    expected: u64,
    received: u64,
    missing: u64,
    repeated: u64,
    /// Frames about connections that never churned, or any frame without presence.
    strangers: u64,
}

fn tally(seen: &Seen, churned: &[&String], presence: bool) -> Tally {
    let mut t = Tally::default();
    for frames in &seen.frames {
        let frames = frames.lock().map(|f| f.clone()).unwrap_or_default();
        t.add(&frames, churned, presence);
    }
    t
}

impl Tally {
    /// One watcher's frames: with presence, one join and one leave per churner.
    fn add(&mut self, frames: &HashMap<String, (u64, u64)>, churned: &[&String], presence: bool) {
        if !presence {
            self.strangers += frames.values().map(|(j, l)| j + l).sum::<u64>();
            return;
        }
        self.expected += 2 * churned.len() as u64;
        for id in churned {
            let (joins, leaves) = frames.get(*id).copied().unwrap_or((0, 0));
            self.received += joins + leaves;
            self.missing += u64::from(joins == 0) + u64::from(leaves == 0);
            self.repeated += joins.saturating_sub(1) + leaves.saturating_sub(1);
        }
        let known: std::collections::HashSet<&str> = churned.iter().map(|s| s.as_str()).collect();
        self.strangers += frames
            .iter()
            .filter(|(id, _)| !known.contains(id.as_str()))
            .map(|(_, (j, l))| j + l)
            .sum::<u64>();
    }
}

/// Before or after the churn: with presence the topic counts the watchers alone; without,
/// presence questions are refused with `no_presence`. Returns the mismatches.
async fn check_counts(
    asker: &mut WsAsker,
    watchers: usize,
    presence: bool,
    when: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<u64> {
    if !presence {
        return Ok(match asker.stats(TOPIC).await {
            Err(e)
                if e.downcast_ref::<Refused>()
                    .is_some_and(|r| r.code == "no_presence") =>
            {
                0
            }
            other => {
                notes.push(format!(
                    "presence_stats on the topic without presence answered {other:?}, not error `no_presence`"
                ));
                1
            }
        });
    }
    let want = (watchers as u64, members::users_in(watchers) as u64);
    // A Redis store may write the last leaves a moment after the frames.
    let limit = Instant::now() + COUNTS_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last = None;
    while Instant::now() < limit {
        tick.tick().await;
        let (stats, _) = asker.stats(TOPIC).await?;
        if (stats.connections, stats.users) == want && !stats.degraded {
            notes.push(format!(
                "{when} the churn presence_stats counted the {} watchers ({} users) alone",
                want.0, want.1
            ));
            return Ok(0);
        }
        last = Some(stats);
    }
    notes.push(format!(
        "{when} the churn presence_stats said {last:?} for {COUNTS_LIMIT:?}, not the {} watchers alone",
        want.0
    ));
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_churner_counts_once_per_watcher() {
        let (a, b) = ("a".to_owned(), "b".to_owned());
        let churned = [&a, &b];
        let frames: HashMap<String, (u64, u64)> = [
            ("a".into(), (1, 1)),
            ("b".into(), (2, 0)),
            ("x".into(), (1, 0)),
        ]
        .into();
        let mut t = Tally::default();
        t.add(&frames, &churned, true);
        assert_eq!(
            t,
            Tally {
                expected: 4,
                received: 4,
                missing: 1,
                repeated: 1,
                strangers: 1
            }
        );
        let mut off = Tally::default();
        off.add(&frames, &churned, false);
        assert_eq!((off.expected, off.strangers), (0, 5));
    }

    #[test]
    fn medians_pair_off_and_on_per_store() {
        let row = |label: String, s: f64| ServerResult {
            label,
            cpu_s_per_1000_pairs: Some(s),
            ..ServerResult::default()
        };
        let results = [
            row(label("memory", false, 1, 3), 1.0),
            row(label("memory", true, 1, 3), 1.5),
            row(label("memory", true, 2, 3), 1.2),
            row(label("memory", false, 2, 3), 0.8),
            row(label("memory", false, 3, 3), 1.1),
            row(label("memory", true, 3, 3), 1.4),
        ];
        assert_eq!(medians(&results, "memory"), Some((1.0, 1.4)));
        assert_eq!(medians(&results, "redis"), None);
    }
}
