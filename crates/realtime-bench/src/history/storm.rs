//! The recovery storm: N clients subscribed to a history topic drop their sockets
//! at once, M messages are published, and all N reconnect at once with `since` =
//! their last position. Measures how long until every one has caught up and
//! checks, by sequence number and by offset, that none lost or duplicated one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::http::{Api, Position};
use super::node::{HistoryLimits, Node, Store};
use super::session::{Client, Follow, Shared};
use crate::client::ConnSpec;
use crate::delivery::{Others, machine_load, round, summarize};
use crate::fleet::CONNECT_CONCURRENCY;
use crate::procstat::ProcWatch;
use crate::record::{RunRecord, ServerResult};
use crate::scenarios::Common;
use crate::servers::Kind;
use crate::tracker::new_histogram;

/// The history topic the storm runs on.
const TOPIC: &str = "storm";
/// How long deliveries may stop progressing before a wait gives up.
const QUIET: Duration = Duration::from_secs(5);
/// Upper bound of any one wait (connecting, draining, catching up).
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// Parameters of the recovery storm.
#[derive(Debug, Clone)]
pub struct Storm {
    pub clients: usize,
    /// Messages published while every client is away.
    pub behind: u64,
    /// Messages every client receives live before the drop.
    pub warmup: u64,
    /// Messages published during the reconnect, at `live_rate`.
    pub live: u64,
    pub live_rate: f64,
    pub size: usize,
    pub history: HistoryLimits,
    pub stores: Vec<Store>,
}

/// One publication, in publish order.
#[derive(Debug, Clone, Copy)]
struct Publication {
    seq: u64,
    offset: u64,
}

/// The storm on each store in turn, each on a freshly started node.
pub async fn recovery_storm(common: &Common, s: &Storm) -> anyhow::Result<RunRecord> {
    if s.behind == 0 {
        bail!("a storm needs at least one message published while the clients are away");
    }
    let mut results = Vec::new();
    for &store in &s.stores {
        let label = format!("realtime ({} store)", store.name());
        eprintln!(
            "recovery-storm: {label}, {} clients, {} behind",
            s.clients, s.behind
        );
        let node = Node::start(&common.bins, store, TOPIC, Some(&s.history)).await?;
        let result = run(&node, s, &label).await;
        node.stop().await;
        results.push(result?);
    }
    let params = json!({
        "clients": s.clients,
        "behind": s.behind,
        "warmup": s.warmup,
        "live": s.live,
        "live_rate": s.live_rate,
        "message_size": s.size,
        "history_size": s.history.size,
        "history_ttl": s.history.ttl,
        "stores": s.stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
    });
    Ok(common.record("recovery-storm", params, results))
}

async fn run(node: &Node, s: &Storm, label: &str) -> anyhow::Result<ServerResult> {
    let addr = node.server.addr;
    let api = Arc::new(Api::new(addr));
    let shared = Shared::new(s.clients);
    let tokens = crate::tokens::mint(s.clients);
    let base = api.position(TOPIC).await.with_context(|| {
        format!("{label}: topic `{TOPIC}` should keep history (is history configured?)")
    })?;

    // Everyone subscribes and receives the warm-up live.
    let (stop, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks: Vec<JoinHandle<Client>> = Vec::with_capacity(s.clients);
    for (index, token) in tokens.into_iter().enumerate() {
        let spec = ConnSpec {
            kind: Kind::Realtime,
            server: addr,
            index,
            token: Some(token),
            topic: None,
            recv_buffer: None,
        };
        let (shared, gate, stop) = (shared.clone(), gate.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(index, spec, TOPIC);
            let permit = gate.acquire_owned().await;
            let joined = client.join(&shared, false).await;
            drop(permit);
            if let Ok(ws) = joined {
                let follow = Follow {
                    stop,
                    catch_up: None,
                };
                client.follow(ws, &shared, follow).await;
            }
            client
        }));
    }
    wait_settled(&shared).await;
    let mut published = Vec::new();
    publish(&api, &base, 0..s.warmup, s.size, &mut published).await?;
    wait_all(&shared, base.offset + s.warmup, "the warm-up").await;
    // Every socket dropped at the same moment, none with a close frame.
    let _ = stop.send(true);
    let clients = join(tasks).await;
    if let Some((index, error)) = first_error(&clients) {
        bail!("{label}: client {index} failed before the drop: {error}");
    }

    publish(
        &api,
        &base,
        s.warmup..s.warmup + s.behind,
        s.size,
        &mut published,
    )
    .await?;
    let target = api.position(TOPIC).await?;

    // Every client back at once, each with its own last position.
    let watch = ProcWatch::new(vec![node.server.pid()]);
    let others = Others::new(node.redis_pid());
    let (before, others_before) = (watch.sample(), others.sample());
    let delivered_before = shared.delivered.load(Ordering::Relaxed);
    let overflows_before = crate::procstat::listen_overflows();
    let (stop, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for mut client in clients {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        let catch_up = Some((target.offset, start));
        tasks.push(tokio::spawn(async move {
            if let Ok(ws) = client.join(&shared, true).await {
                client.answered = Some(start.elapsed());
                client.follow(ws, &shared, Follow { stop, catch_up }).await;
            }
            client
        }));
    }
    let live = {
        let (api, base) = (api.clone(), base.clone());
        let first = s.warmup + s.behind;
        let (count, rate, size) = (s.live, s.live_rate, s.size);
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            for seq in first..first + count {
                ticks.tick().await;
                publish(&api, &base, seq..seq + 1, size, &mut out).await?;
            }
            anyhow::Ok(out)
        })
    };
    wait_all(&shared, target.offset, "the catch-up").await;
    let live = live.await.context("live publisher")??;
    published.extend(live);
    let last = api.position(TOPIC).await?;
    wait_all(&shared, last.offset, "the live messages").await;
    let window = start.elapsed();
    let (after, others_after) = (watch.sample(), others.sample());
    let replayed_and_live = shared.delivered.load(Ordering::Relaxed) - delivered_before;
    let overflows = crate::procstat::listen_overflows()
        .zip(overflows_before)
        .map(|(after, before)| after.saturating_sub(before));
    let _ = stop.send(true);
    let clients = join(tasks).await;

    let mut result = account(s, label, &clients, &published, &target);
    let cpu = after.cpu_since(&before);
    result.server_cpu_s = Some(round(cpu, 3));
    result.cpu_us_per_delivery =
        (replayed_and_live > 0).then(|| round(cpu * 1e6 / replayed_and_live as f64, 3));
    result.deliveries_per_s = Some(round(
        replayed_and_live as f64 / window.as_secs_f64().max(1e-6),
        1,
    ));
    result.rss_peak_kib = Some(after.rss_kib);
    if target.offset != base.offset + s.warmup + s.behind {
        result.notes.push(format!(
            "the topic's offset moved from {} to {} over {} publishes",
            base.offset,
            target.offset,
            s.warmup + s.behind
        ));
    }
    if let Some(n) = overflows.filter(|n| *n > 0) {
        result.notes.push(format!(
            "the kernel dropped {n} connection attempts during the reconnect because the server's accept queue was full (ListenOverflows, machine-wide); those clients' SYNs were retried after a second, which sets the tail of the catch-up"
        ));
    }
    result.notes.push(format!(
        "server CPU and deliveries/s cover the reconnect: from every client reconnecting until all had the {} live messages too",
        s.live
    ));
    result
        .notes
        .push(machine_load(cpu, &others_before, &others_after, window));
    Ok(result)
}

/// Publishes `seqs` one after another, remembering each one's offset (from the
/// answer when it carries one, else counted from `base`).
async fn publish(
    api: &Api,
    base: &Position,
    seqs: std::ops::Range<u64>,
    size: usize,
    out: &mut Vec<Publication>,
) -> anyhow::Result<()> {
    for seq in seqs {
        let position = api.publish(TOPIC, seq, size).await?;
        let offset = position.map_or(base.offset + seq + 1, |p| p.offset);
        out.push(Publication { seq, offset });
    }
    Ok(())
}

/// Waits until every client has `offset`, or deliveries stop progressing for
/// [`QUIET`], bounded by [`WAIT_LIMIT`]. The accounting afterwards says who did not.
async fn wait_all(shared: &Shared, offset: u64, what: &str) {
    let n = shared.offsets.len();
    let limit = Instant::now() + WAIT_LIMIT;
    let mut last = (
        usize::MAX,
        shared.delivered.load(Ordering::Relaxed),
        Instant::now(),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while Instant::now() < limit {
        tick.tick().await;
        let done = shared.at_least(offset);
        if done == n {
            return;
        }
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if (done, delivered) != (last.0, last.1) {
            last = (done, delivered, Instant::now());
        } else if last.2.elapsed() > QUIET {
            break;
        }
    }
    eprintln!(
        "recovery-storm: {what}: {} of {n} clients reached offset {offset}",
        shared.at_least(offset)
    );
}

/// Waits until every client's first subscribe was answered or failed.
async fn wait_settled(shared: &Shared) {
    let limit = Instant::now() + WAIT_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while shared.settled.load(Ordering::Relaxed) < shared.offsets.len() && Instant::now() < limit {
        tick.tick().await;
    }
}

async fn join(tasks: Vec<JoinHandle<Client>>) -> Vec<Client> {
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(client) = task.await {
            clients.push(client);
        }
    }
    clients.sort_by_key(|c| c.index);
    clients
}

fn first_error(clients: &[Client]) -> Option<(usize, &str)> {
    clients
        .iter()
        .find_map(|c| c.error.as_deref().map(|e| (c.index, e)))
}

/// Every client against every publication: received once, told it was missed,
/// or lost; and each client's stream in offset order.
fn account(
    s: &Storm,
    label: &str,
    clients: &[Client],
    published: &[Publication],
    target: &Position,
) -> ServerResult {
    let (mut delivered, mut lost, mut by_notice, mut duplicated, mut offset_errors) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut recovered, mut not_recovered, mut failed, mut notices) = (0u64, 0u64, 0usize, 0u64);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut catch_up = new_histogram();
    let mut answered = new_histogram();
    let mut slowest = Duration::ZERO;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for client in clients {
        let answer = client.answer.clone().unwrap_or_default();
        match answer.recovered {
            Some(true) => recovered += 1,
            Some(false) => {
                not_recovered += 1;
                let reason = answer.reason.clone().unwrap_or_else(|| "none given".into());
                *reasons.entry(reason).or_default() += 1;
            }
            None => {}
        }
        if client.answer.is_none() {
            failed += 1;
        }
        if let Some(e) = &client.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
        // What the client was told it would not get: after its `since`, up to
        // where the server said delivery goes on; everything after the drop
        // when its reconnect was refused or failed (it knows it is not
        // subscribed, so nothing it misses is silent).
        let told = match (&client.since, answer.recovered, answer.offset) {
            (Some(since), Some(false), Some(resumed)) => since.offset + 1..resumed + 1,
            (Some(since), _, _) if client.answer.is_none() => since.offset + 1..u64::MAX,
            _ => 0..0,
        };
        for p in published {
            if client.seqs.has(p.seq) {
                delivered += 1;
            } else if told.contains(&p.offset) {
                by_notice += 1;
            } else {
                lost += 1;
            }
        }
        duplicated += client.seqs.duplicated;
        offset_errors += client.offsets.errors() + client.unpositioned;
        notices += client.missed_notices;
        if let Some(t) = client.answered {
            let _ = answered.record((t.as_micros() as u64).clamp(1, 60_000_000));
        }
        if let (Some(true), Some(t)) = (answer.recovered, client.catch_up) {
            let _ = catch_up.record((t.as_micros() as u64).clamp(1, 60_000_000));
            slowest = slowest.max(t);
        }
    }
    let everyone = recovered as usize == clients.len() && clients.len() == s.clients;
    let mut notes = vec![format!(
        "every client dropped its socket at once (TCP closed without a WebSocket close frame) {} publications after it subscribed, missed {} while away, and reconnected at once with `since` (no concurrency limit) while {} more were published live at {}/s; the catch-up ends when a client holds offset {}",
        s.warmup, s.behind, s.live, s.live_rate, target.offset
    )];
    if let Some(l) = summarize(&answered) {
        notes.push(format!(
            "the `subscribed` answer came after p50 {} ms, p99 {} ms, max {} ms from the start of the storm (connect, upgrade, JWT check, subscribe and the history read); the rest of a catch-up is the replay",
            crate::report::ms(l.p50_us),
            crate::report::ms(l.p99_us),
            crate::report::ms(l.max_us)
        ));
    }
    if !everyone {
        notes.push(format!(
            "{} of {} clients did not recover; the catch-up figures are those that did",
            s.clients - recovered as usize,
            s.clients
        ));
    }
    for (reason, count) in &reasons {
        notes.push(format!("recovered:false with reason `{reason}` × {count}"));
    }
    if notices > 0 {
        notes.push(format!("`missed` notices received: {notices}"));
    }
    for (error, count) in &errors {
        notes.push(format!("client error × {count}: {error}"));
    }
    if failed > 0 {
        notes.push(format!(
            "{failed} reconnects failed or were refused: what those clients did not receive after the drop is counted as told missed, not lost"
        ));
    }
    ServerResult {
        server: "realtime".into(),
        label: label.to_owned(),
        connections: s.clients,
        failed_connections: failed,
        published: Some(published.len() as u64),
        expected: Some(published.len() as u64 * s.clients as u64),
        delivered: Some(delivered),
        lost: Some(lost),
        duplicated: Some(duplicated),
        accounted_by_notice: Some(by_notice),
        offset_errors: Some(offset_errors),
        recovered: Some(recovered),
        not_recovered: Some(not_recovered),
        catch_up: summarize(&catch_up),
        all_caught_up_ms: everyone.then(|| round(slowest.as_secs_f64() * 1000.0, 1)),
        notes,
        ..ServerResult::default()
    }
}
