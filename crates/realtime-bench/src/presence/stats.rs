//! presence-stats: one node holding a topic of many members (one WebSocket
//! connection each) and a topic of a few, then the round trip of
//! `presence_stats` and of a first `presence` page of 100, over WebSocket and
//! over HTTP, asked one at a time. The small topic is the yardstick for
//! "constant whatever the topic's size". Every answer is checked against the
//! generator's own tally of the connections it opened.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use realtime_core::Transport;
use serde_json::json;
use tokio::time::Instant;

use super::members;
use super::node::{Node, Presence};
use super::query::{HttpAsker, Page, Stats, WsAsker};
use crate::client::ConnSpec;
use crate::delivery::{Others, buckets, machine_load, round, summarize};
use crate::fleet::{Fleet, Member};
use crate::history::Store;
use crate::procstat::ProcWatch;
use crate::progress;
use crate::record::{RunRecord, ServerResult};
use crate::report::thousands;
use crate::scenarios::Common;
use crate::servers::Kind;
use crate::tracker::new_histogram;

/// The topic of many members and the yardstick topic of a few.
pub const LARGE: &str = "members";
pub const SMALL: &str = "few";
/// The page size asked for, as a client showing a member list would.
pub const PAGE: u64 = 100;
/// Questions asked before each timed block, not recorded.
const WARMUP: usize = 20;
/// Upper bound for the presence answers to count every member opened.
const SETTLE: Duration = Duration::from_secs(60);

/// Parameters of presence-stats.
#[derive(Debug, Clone)]
pub struct StatsRun {
    /// Connections subscribed to the large topic.
    pub members: usize,
    /// Connections subscribed to the small topic.
    pub few: usize,
    /// Timed questions per block.
    pub questions: usize,
    pub stores: Vec<Store>,
}

/// Which question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    Stats,
    FirstPage,
}

/// Which way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Ws,
    Http,
}

/// The label of one timed block; the headline finds blocks by it.
pub fn label(store: &str, way: Way, question: Question, members: usize) -> String {
    let way = match way {
        Way::Ws => "WS",
        Way::Http => "HTTP",
    };
    let question = match question {
        Question::Stats => "presence_stats".to_owned(),
        Question::FirstPage => format!("presence page of {PAGE}"),
    };
    format!(
        "realtime ({store} store, {way} {question}, {} members)",
        thousands(members as u64)
    )
}

/// Each store in turn, on a freshly started node.
pub async fn presence_stats(common: &Common, s: &StatsRun) -> anyhow::Result<RunRecord> {
    let mut results = Vec::new();
    for &store in &s.stores {
        eprintln!(
            "presence-stats: {} store, {} + {} members",
            store.name(),
            s.members,
            s.few
        );
        let node = super::node::start(&common.bins, store, &[LARGE, SMALL], Presence::On).await?;
        let measured = measure(&node, store, s).await;
        node.stop().await;
        results.extend(measured?);
    }
    let params = json!({
        "members": s.members,
        "users": members::users_in(s.members),
        "small_topic_members": s.few,
        "page_limit": PAGE,
        "questions_per_block": s.questions,
        "stores": s.stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
    });
    Ok(common.record("presence-stats", params, results))
}

/// What a topic's answers must say, from the connections the generator opened.
struct Expected {
    topic: &'static str,
    connections: u64,
    users: u64,
    /// Connections per user.
    per_user: BTreeMap<String, u64>,
}

impl Expected {
    fn of(topic: &'static str, group: &str, opened: usize) -> Expected {
        let mut per_user = BTreeMap::new();
        for i in 0..opened {
            *per_user.entry(members::user_of(group, i)).or_default() += 1;
        }
        Expected {
            topic,
            connections: opened as u64,
            users: per_user.len() as u64,
            per_user,
        }
    }

    fn stats_agree(&self, stats: &Stats) -> bool {
        !stats.degraded && stats.connections == self.connections && stats.users == self.users
    }

    fn first_page_agrees(&self, page: &Page) -> bool {
        !page.degraded
            && page.connections() as u64 == self.connections.min(PAGE)
            && page.cursor.is_some() == (self.connections > PAGE)
    }
}

async fn measure(node: &Node, store: Store, s: &StatsRun) -> anyhow::Result<Vec<ServerResult>> {
    let addr = node.server.addr;
    let large = open_group(addr, LARGE, "m", s.members, 0).await;
    let few = open_group(addr, SMALL, "f", s.few, s.members).await;
    let failed = large.failed + few.failed;
    let first_error = large.first_error.clone().or(few.first_error.clone());
    // Exact when every connection opened; each failure is a mismatch below.
    let expected = [
        Expected::of(LARGE, "m", large.len()),
        Expected::of(SMALL, "f", few.len()),
    ];
    let token = members::tokens("asker", 1).remove(0);
    let mut ws = WsAsker::connect(addr, s.members + s.few, token).await?;
    let http = HttpAsker::new(addr);

    let mut notes = Vec::new();
    let mut mismatches = failed as u64;
    if let Some(e) = first_error {
        notes.push(format!("{failed} connections failed; first error: {e}"));
    }
    for e in &expected {
        let started = Instant::now();
        match settle(&mut ws, e).await? {
            true => notes.push(format!(
                "`{}`: presence_stats counted all {} connections of {} users {} ms after the last `subscribed` answer",
                e.topic,
                thousands(e.connections),
                thousands(e.users),
                started.elapsed().as_millis()
            )),
            false => {
                mismatches += 1;
                notes.push(format!(
                    "`{}`: presence_stats never counted the {} connections opened within {SETTLE:?}",
                    e.topic, e.connections
                ));
            }
        }
    }
    // An odd page size, so a user with two connections sometimes continues on
    // the next page; at most the protocol's 1000.
    let walk = ((s.members as u64 / 7).clamp(1, 999)) | 1;
    let paging = page_through(&mut ws, &expected[0], walk).await?;
    mismatches += paging.errors;
    notes.push(paging.note(&expected[0]));

    let mut results = Vec::new();
    let blocks = [
        (Way::Ws, Question::Stats, &expected[0]),
        (Way::Http, Question::Stats, &expected[0]),
        (Way::Ws, Question::FirstPage, &expected[0]),
        (Way::Http, Question::FirstPage, &expected[0]),
        (Way::Ws, Question::Stats, &expected[1]),
        (Way::Ws, Question::FirstPage, &expected[1]),
    ];
    let watch = ProcWatch::new(vec![node.server.pid()]);
    let others = Others::new(node.redis_pid());
    for (i, (way, question, e)) in blocks.into_iter().enumerate() {
        let label = label(store.name(), way, question, e.connections as usize);
        eprintln!("presence-stats: {label}");
        let mut asking = Asking {
            ws: &mut ws,
            http: &http,
        };
        for _ in 0..WARMUP {
            asking.ask(way, question, e).await?;
        }
        let mut histogram = new_histogram();
        let mut wrong = 0u64;
        let (before, others_before) = (watch.sample(), others.sample());
        let start = Instant::now();
        for _ in 0..s.questions {
            let (took, agrees) = asking.ask(way, question, e).await?;
            let _ = histogram.record((took.as_micros() as u64).clamp(1, 60_000_000));
            wrong += u64::from(!agrees);
        }
        let window = start.elapsed();
        let (after, others_after) = (watch.sample(), others.sample());
        let cpu = after.cpu_since(&before);
        let mut result = ServerResult {
            server: "realtime".into(),
            label,
            connections: e.connections as usize,
            failed_connections: if i == 0 { failed } else { 0 },
            server_cpu_s: Some(round(cpu, 3)),
            cpu_us_per_answer: Some(round(cpu * 1e6 / s.questions.max(1) as f64, 2)),
            latency: summarize(&histogram),
            latency_buckets: buckets(&histogram),
            rss_peak_kib: Some(after.rss_kib),
            tally_mismatches: Some(wrong + if i == 0 { mismatches } else { 0 }),
            ..ServerResult::default()
        };
        if i == 0 {
            result.notes.append(&mut notes);
        }
        if wrong > 0 {
            result.notes.push(format!(
                "{wrong} of {} answers disagreed with the generator's tally",
                s.questions
            ));
        }
        result
            .notes
            .push(machine_load(cpu, &others_before, &others_after, window));
        results.push(result);
    }
    ws.close().await;
    large.finish().await;
    few.finish().await;
    Ok(results)
}

/// The two ways to ask, and one question asked and checked.
struct Asking<'a> {
    ws: &'a mut WsAsker,
    http: &'a HttpAsker,
}

impl Asking<'_> {
    async fn ask(
        &mut self,
        way: Way,
        question: Question,
        e: &Expected,
    ) -> anyhow::Result<(Duration, bool)> {
        Ok(match (way, question) {
            (Way::Ws, Question::Stats) => {
                let (stats, took) = self.ws.stats(e.topic).await?;
                (took, e.stats_agree(&stats))
            }
            (Way::Http, Question::Stats) => {
                let (stats, took) = self.http.stats(e.topic).await?;
                (took, e.stats_agree(&stats))
            }
            (Way::Ws, Question::FirstPage) => {
                let (page, took) = self.ws.page(e.topic, PAGE, None).await?;
                (took, e.first_page_agrees(&page))
            }
            (Way::Http, Question::FirstPage) => {
                let (page, took) = self.http.page(e.topic, PAGE, None).await?;
                (took, e.first_page_agrees(&page))
            }
        })
    }
}

/// `count` connections of user group `group`, each subscribed to `topic`;
/// `first` is the first connection's index (it picks the source address).
async fn open_group(
    server: SocketAddr,
    topic: &str,
    group: &str,
    count: usize,
    first: usize,
) -> Fleet {
    let members = members::tokens(group, count)
        .into_iter()
        .enumerate()
        .map(|(i, token)| Member {
            spec: ConnSpec {
                kind: Kind::Realtime,
                server,
                index: first + i,
                token: Some(token),
                topic: Some(topic.to_owned()),
                recv_buffer: None,
            },
            transport: Transport::Websocket,
            topic: 0,
            stalled: false,
        })
        .collect();
    let bar = progress::bar(count as u64, "subscribing");
    // A connection that fails leaves the tally inexact (which user it was is
    // not known): the caller counts every failure as a mismatch.
    let fleet = Fleet::open(members, || bar.inc(1)).await;
    bar.finish_and_clear();
    fleet
}

/// Asks `presence_stats` until it counts what was opened: a Redis store may
/// record a join a moment after the `subscribed` answer. Polling is the only
/// way to see it; bounded by [`SETTLE`].
async fn settle(ws: &mut WsAsker, e: &Expected) -> anyhow::Result<bool> {
    let limit = Instant::now() + SETTLE;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < limit {
        tick.tick().await;
        let (stats, _) = ws.stats(e.topic).await?;
        if e.stats_agree(&stats) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What paging through a whole topic found.
struct Paging {
    limit: u64,
    pages: u64,
    listed: u64,
    errors: u64,
    took: Duration,
    problems: Vec<String>,
}

impl Paging {
    /// Counts one disagreement, keeping the first few to say what they were.
    fn problem(&mut self, text: String) {
        self.errors += 1;
        if self.problems.len() < 3 {
            self.problems.push(text);
        }
    }

    fn note(&self, e: &Expected) -> String {
        let verdict = match self.errors {
            0 => "every connection exactly once, grouped under the right user, users in order"
                .to_owned(),
            n => format!("{n} disagreements: {}", self.problems.join("; ")),
        };
        format!(
            "paging `{}` with limit {} took {} pages ({} ms) and listed {} of {} connections: {verdict}",
            e.topic,
            self.limit,
            self.pages,
            self.took.as_millis(),
            thousands(self.listed),
            thousands(e.connections),
        )
    }
}

/// Reads every page of `e.topic` (`limit` a page) and checks it against the tally:
/// each connection once, each user's connections as many as it opened, users
/// in order across pages (a user may continue on the next page).
async fn page_through(ws: &mut WsAsker, e: &Expected, limit: u64) -> anyhow::Result<Paging> {
    let start = Instant::now();
    let mut seen_connections = HashSet::new();
    let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_user: Option<String> = None;
    let mut paging = Paging {
        limit,
        pages: 0,
        listed: 0,
        errors: 0,
        took: Duration::ZERO,
        problems: Vec::new(),
    };
    let mut cursor: Option<String> = None;
    loop {
        let (page, _) = ws.page(e.topic, limit, cursor.as_deref()).await?;
        paging.pages += 1;
        if page.degraded {
            paging.problem(format!("page {} says degraded", paging.pages));
        }
        for user in &page.users {
            if last_user.as_ref().is_some_and(|last| *last > user.user_id) {
                paging.problem(format!("user {} after {last_user:?}", user.user_id));
            }
            let mut last_connection: Option<&str> = None;
            for c in &user.connections {
                if last_connection.is_some_and(|last| last >= c.connection_id.as_str()) {
                    paging.problem(format!("connections of {} out of order", user.user_id));
                }
                last_connection = Some(&c.connection_id);
                if !seen_connections.insert(c.connection_id.clone()) {
                    paging.problem(format!("connection {} listed twice", c.connection_id));
                }
                paging.listed += 1;
                *per_user.entry(user.user_id.clone()).or_default() += 1;
            }
            last_user = Some(user.user_id.clone());
        }
        match page.cursor {
            Some(next) if paging.pages < 1 + e.connections / limit + 10 => cursor = Some(next),
            Some(_) => {
                paging.problem("the cursor never ended".into());
                break;
            }
            None => break,
        }
    }
    if per_user != e.per_user {
        let wrong = e
            .per_user
            .iter()
            .filter(|(user, n)| per_user.get(*user) != Some(n))
            .count()
            + per_user
                .keys()
                .filter(|u| !e.per_user.contains_key(*u))
                .count();
        paging.problem(format!(
            "{wrong} users listed with another number of connections than they opened"
        ));
    }
    paging.took = start.elapsed();
    Ok(paging)
}

/// Per store, the p50 of WS `presence_stats` on the large topic and on the
/// small one, as labelled by this scenario.
pub(crate) fn constant_time(record: &RunRecord) -> Vec<(String, f64, f64)> {
    let members = record.params["members"].as_u64().unwrap_or(0) as usize;
    let few = record.params["small_topic_members"].as_u64().unwrap_or(0) as usize;
    ["memory", "redis"]
        .into_iter()
        .filter_map(|store| {
            let p50 = |n: usize| {
                let label = label(store, Way::Ws, Question::Stats, n);
                record
                    .results
                    .iter()
                    .find(|r| r.label == label)
                    .and_then(|r| r.latency.as_ref())
                    .map(|l| l.p50_us)
            };
            Some((store.to_owned(), p50(members)?, p50(few)?))
        })
        .collect()
}
