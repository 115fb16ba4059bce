//! [`RedisDirectory`]: the cluster-wide connection view in Redis, with expiry.
//!
//! Each node keeps, all with one expiry that every heartbeat pushes forward (so a
//! node that dies without cleaning up leaves the views within 3 heartbeats):
//!
//! - `{prefix}:conns:{node}`: hash, connection id → JSON record (without topics);
//! - `{prefix}:ids:{node}`: sorted set of those ids, for pages of the connections view;
//! - `{prefix}:subs:{node}:{id}`: set, the topics of one connection;
//! - `{prefix}:counts:{node}`: hash, topic → local subscribers, and
//!   `{prefix}:topics:{node}`: sorted set of those topics, for pages of the topics view;
//!
//! and its name in the set `{prefix}:nodes`. A subscribe or unsubscribe is one small
//! script on three keys, whatever else the connection holds; a page of a view reads
//! at most `limit` entries per node. Commands go out in pipelined batches, in the
//! order they were requested. After a reconnect, or if the records are found
//! missing (Redis restarted empty), the node rewrites all of them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use realtime::cluster::bus::{
    BusError, BusFuture, BusStatus, ClusterDirectory, ConnectionKey, ConnectionPage,
    DirectoryEntry, ListFuture, Page, PageRequest, Snapshot, TopicPage, TopicsFuture,
};
use redis::Client;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::link::{self, Link};
use crate::metrics::LinkGauges;

/// Commands per pipelined batch.
const BATCH: usize = 256;
/// Entries per command when rewriting every record.
const CHUNK: usize = 500;

/// KEYS: subs, counts, topics. ARGV: topic, ttl in ms.
const ADD_TOPIC: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then
    redis.call('ZADD', KEYS[3], 0, ARGV[1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1";

/// KEYS: subs, counts, topics. ARGV: topic.
const REMOVE_TOPIC: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[3], ARGV[1])
  end
end
return 1";

/// KEYS: subs, counts, topics, conns, ids. ARGV: connection id.
const REMOVE_CONNECTION: &str = r"
for _, topic in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HINCRBY', KEYS[2], topic, -1) <= 0 then
    redis.call('HDEL', KEYS[2], topic)
    redis.call('ZREM', KEYS[3], topic)
  end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1";

type Done = oneshot::Sender<Result<(), BusError>>;

/// A change to this node's records.
enum Write {
    Upsert(DirectoryEntry),
    Remove(Uuid),
    AddTopic(Uuid, String),
    RemoveTopic(Uuid, String),
    Leave,
}

enum Command {
    Write(Write, Done),
    List(
        PageRequest<ConnectionKey>,
        oneshot::Sender<Result<ConnectionPage, BusError>>,
    ),
    Topics(
        PageRequest<String>,
        oneshot::Sender<Result<TopicPage, BusError>>,
    ),
}

impl Command {
    fn refuse(self, reason: &str) {
        let err = || BusError::Unavailable(reason.to_owned());
        match self {
            Command::Write(_, done) => {
                let _ = done.send(Err(err()));
            }
            Command::List(_, done) => {
                let _ = done.send(Err(err()));
            }
            Command::Topics(_, done) => {
                let _ = done.send(Err(err()));
            }
        }
    }
}

fn unavailable(e: &redis::RedisError) -> BusError {
    BusError::Unavailable(format!("redis directory: {e}"))
}

fn stopped() -> BusError {
    BusError::Unavailable("redis directory stopped".into())
}

/// The cluster directory in Redis. Create it with [`crate::RedisCluster`].
pub struct RedisDirectory {
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    commands: mpsc::UnboundedSender<Command>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl RedisDirectory {
    pub(crate) fn new(client: Client, config: RedisConfig, gauges: LinkGauges) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        RedisDirectory {
            client,
            config,
            link: Arc::new(Link::with_gauges("directory", gauges)),
            commands,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    fn write(&self, write: Write) -> BusFuture {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(Command::Write(write, done));
        Box::pin(async move { result.await.unwrap_or_else(|_| Err(stopped())) })
    }
}

impl ClusterDirectory for RedisDirectory {
    fn start(&self, node: String, snapshot: Snapshot) {
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.link
                .mark_down(&"the directory must be started inside a tokio runtime");
            return;
        };
        let keys = Keys::new(&self.config.prefix, &node);
        runtime.spawn(run(
            self.client.clone(),
            self.config.clone(),
            self.link.clone(),
            keys,
            snapshot,
            receiver,
        ));
    }

    fn upsert(&self, entry: DirectoryEntry) -> BusFuture {
        self.write(Write::Upsert(entry))
    }

    fn remove(&self, connection: Uuid) -> BusFuture {
        self.write(Write::Remove(connection))
    }

    fn add_topic(&self, connection: Uuid, topic: String) -> BusFuture {
        self.write(Write::AddTopic(connection, topic))
    }

    fn remove_topic(&self, connection: Uuid, topic: String) -> BusFuture {
        self.write(Write::RemoveTopic(connection, topic))
    }

    fn list(&self, page: PageRequest<ConnectionKey>) -> ListFuture {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(Command::List(page, done));
        Box::pin(async move { result.await.unwrap_or_else(|_| Err(stopped())) })
    }

    fn topics(&self, page: PageRequest<String>) -> TopicsFuture {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(Command::Topics(page, done));
        Box::pin(async move { result.await.unwrap_or_else(|_| Err(stopped())) })
    }

    fn leave(&self) -> BusFuture {
        self.write(Write::Leave)
    }

    fn status(&self) -> BusStatus {
        if self.link.is_up() {
            BusStatus::Up
        } else {
            BusStatus::Down {
                reason: self.link.reason(),
            }
        }
    }
}

/// Key names, for this node and for the others.
#[derive(Clone)]
struct Keys {
    prefix: String,
    node: String,
    nodes: String,
}

impl Keys {
    fn new(prefix: &str, node: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            nodes: format!("{prefix}:nodes"),
        }
    }

    fn of(&self, kind: &str, node: &str) -> String {
        format!("{}:{kind}:{node}", self.prefix)
    }

    fn conns(&self, node: &str) -> String {
        self.of("conns", node)
    }

    fn ids(&self, node: &str) -> String {
        self.of("ids", node)
    }

    fn counts(&self, node: &str) -> String {
        self.of("counts", node)
    }

    fn topics(&self, node: &str) -> String {
        self.of("topics", node)
    }

    fn subs(&self, node: &str, id: &str) -> String {
        format!("{}:subs:{node}:{id}", self.prefix)
    }

    /// This node's keys that share its expiry (besides one set per connection).
    fn own(&self) -> [String; 4] {
        let n = &self.node;
        [self.conns(n), self.ids(n), self.counts(n), self.topics(n)]
    }
}

async fn run(
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    keys: Keys,
    snapshot: Snapshot,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let ttl_ms = u64::try_from(config.record_ttl().as_millis()).unwrap_or(u64::MAX);
    // This node's connections as last written: whose topic sets the heartbeat keeps.
    let mut live: HashSet<Uuid> = HashSet::new();
    loop {
        let connected = async {
            let mut con = link::connect(&client, config.command_timeout).await?;
            resync(&mut con, &keys, &snapshot, ttl_ms, &mut live).await?;
            Ok::<_, redis::RedisError>(con)
        }
        .await;
        let mut con = match connected {
            Ok(con) => con,
            Err(e) => {
                link.mark_down(&e);
                let sleep = tokio::time::sleep(backoff.next_delay());
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        cmd = commands.recv() => match cmd {
                            Some(cmd) => cmd.refuse(&link.reason()),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        link.mark_up();
        backoff.reset();
        let mut heartbeat = tokio::time::interval(config.heartbeat);
        heartbeat.tick().await;
        let failure = loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let mut batch = vec![cmd];
                    while batch.len() < BATCH {
                        match commands.try_recv() {
                            Ok(cmd) => batch.push(cmd),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = execute(&mut con, &keys, batch, ttl_ms, &mut live).await {
                        break e;
                    }
                }
                _ = heartbeat.tick() => {
                    match refresh(&mut con, &keys, &live, ttl_ms).await {
                        // The records are gone although we hold connections: Redis
                        // lost its data without our link noticing. Write them again.
                        Ok(false) if !snapshot().is_empty() => {
                            if let Err(e) = resync(&mut con, &keys, &snapshot, ttl_ms, &mut live).await {
                                break e;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => break e,
                    }
                }
            }
        };
        link.mark_down(&failure);
    }
}

/// Carries out a batch in order: consecutive writes in one pipeline, each read on
/// its own. A Redis failure is returned (after refusing what is left) so the loop
/// reconnects; the resync after it rewrites whatever a failed write left half done.
async fn execute(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    batch: Vec<Command>,
    ttl_ms: u64,
    live: &mut HashSet<Uuid>,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    let mut waiting: Vec<Done> = Vec::new();
    let mut batch = batch.into_iter();
    while let Some(cmd) = batch.next() {
        let outcome = match cmd {
            Command::Write(write, done) => {
                queue_write(&mut pipe, keys, write, ttl_ms, live);
                waiting.push(done);
                continue;
            }
            Command::List(page, done) => {
                let flushed = flush(con, &mut pipe, &mut waiting).await;
                match flushed {
                    Ok(()) => {
                        let listed = list_page(con, keys, page).await;
                        let _ = done.send(listed.as_ref().map_err(unavailable).cloned());
                        listed.map(drop)
                    }
                    Err(e) => {
                        let _ = done.send(Err(unavailable(&e)));
                        Err(e)
                    }
                }
            }
            Command::Topics(page, done) => {
                let flushed = flush(con, &mut pipe, &mut waiting).await;
                match flushed {
                    Ok(()) => {
                        let listed = topics_page(con, keys, page).await;
                        let _ = done.send(listed.as_ref().map_err(unavailable).cloned());
                        listed.map(drop)
                    }
                    Err(e) => {
                        let _ = done.send(Err(unavailable(&e)));
                        Err(e)
                    }
                }
            }
        };
        if let Err(e) = outcome {
            for cmd in batch {
                cmd.refuse(&format!("redis directory: {e}"));
            }
            return Err(e);
        }
    }
    flush(con, &mut pipe, &mut waiting).await
}

/// Sends the queued writes and answers their callers.
async fn flush(
    con: &mut MultiplexedConnection,
    pipe: &mut redis::Pipeline,
    waiting: &mut Vec<Done>,
) -> redis::RedisResult<()> {
    if waiting.is_empty() {
        return Ok(());
    }
    let sent = pipe.query_async::<()>(con).await;
    pipe.clear();
    for done in waiting.drain(..) {
        let _ = done.send(sent.as_ref().map(|_| ()).map_err(unavailable));
    }
    sent
}

fn queue_write(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    write: Write,
    ttl_ms: u64,
    live: &mut HashSet<Uuid>,
) {
    let node = &keys.node;
    match write {
        Write::Upsert(entry) => {
            let id = entry.connection.id;
            live.insert(id);
            let (conns, ids) = (keys.conns(node), keys.ids(node));
            pipe.cmd("HSET")
                .arg(&conns)
                .arg(id.to_string())
                .arg(record(&entry))
                .ignore();
            pipe.cmd("ZADD")
                .arg(&ids)
                .arg(0)
                .arg(id.to_string())
                .ignore();
            pipe.cmd("PEXPIRE").arg(&conns).arg(ttl_ms).ignore();
            pipe.cmd("PEXPIRE").arg(&ids).arg(ttl_ms).ignore();
            pipe.cmd("SADD").arg(&keys.nodes).arg(node).ignore();
            for topic in entry.connection.topics {
                add_topic(pipe, keys, id, &topic, ttl_ms);
            }
        }
        Write::Remove(id) => {
            live.remove(&id);
            let id = id.to_string();
            pipe.cmd("EVAL")
                .arg(REMOVE_CONNECTION)
                .arg(5)
                .arg(keys.subs(node, &id))
                .arg(keys.counts(node))
                .arg(keys.topics(node))
                .arg(keys.conns(node))
                .arg(keys.ids(node))
                .arg(&id)
                .ignore();
        }
        Write::AddTopic(id, topic) => add_topic(pipe, keys, id, &topic, ttl_ms),
        Write::RemoveTopic(id, topic) => {
            pipe.cmd("EVAL")
                .arg(REMOVE_TOPIC)
                .arg(3)
                .arg(keys.subs(node, &id.to_string()))
                .arg(keys.counts(node))
                .arg(keys.topics(node))
                .arg(topic)
                .ignore();
        }
        Write::Leave => {
            pipe.cmd("DEL").arg(&keys.own()).ignore();
            for id in live.drain() {
                pipe.cmd("DEL")
                    .arg(keys.subs(node, &id.to_string()))
                    .ignore();
            }
            pipe.cmd("SREM").arg(&keys.nodes).arg(node).ignore();
        }
    }
}

fn add_topic(pipe: &mut redis::Pipeline, keys: &Keys, id: Uuid, topic: &str, ttl_ms: u64) {
    let node = &keys.node;
    pipe.cmd("EVAL")
        .arg(ADD_TOPIC)
        .arg(3)
        .arg(keys.subs(node, &id.to_string()))
        .arg(keys.counts(node))
        .arg(keys.topics(node))
        .arg(topic)
        .arg(ttl_ms)
        .ignore();
}

/// The stored form of a connection: its topics live in their own set.
fn record(entry: &DirectoryEntry) -> String {
    let mut bare = entry.clone();
    bare.connection.topics.clear();
    serde_json::to_string(&bare).unwrap_or_default()
}

/// Pushes this node's expiry forward. Returns whether its records still existed.
async fn refresh(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    live: &HashSet<Uuid>,
    ttl_ms: u64,
) -> redis::RedisResult<bool> {
    let [conns, rest @ ..] = keys.own();
    let mut pipe = redis::pipe();
    pipe.cmd("SADD").arg(&keys.nodes).arg(&keys.node).ignore();
    pipe.cmd("PEXPIRE").arg(&conns).arg(ttl_ms);
    for key in rest {
        pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
    }
    let (existed,): (i64,) = pipe.query_async(con).await?;
    let ids: Vec<&Uuid> = live.iter().collect();
    for chunk in ids.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("PEXPIRE")
                .arg(keys.subs(&keys.node, &id.to_string()))
                .arg(ttl_ms)
                .ignore();
        }
        pipe.query_async::<()>(con).await?;
    }
    Ok(existed == 1)
}

/// A page of connections: nodes in name order, each node's ids in order, at most
/// `limit + 1` records read in all (the extra one says whether a next page exists).
async fn list_page(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    page: PageRequest<ConnectionKey>,
) -> redis::RedisResult<ConnectionPage> {
    let limit = page.limit.max(1);
    let mut nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&keys.nodes)
        .query_async(con)
        .await?;
    nodes.sort();
    let mut found: Vec<(ConnectionKey, DirectoryEntry)> = Vec::new();
    let mut gone = Vec::new();
    for node in nodes {
        let from = match &page.after {
            Some((after, _)) if after > &node => continue,
            Some((after, id)) if after == &node => format!("({id}"),
            _ => "-".to_owned(),
        };
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(keys.ids(&node))
            .arg(&from)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1 - found.len())
            .query_async(con)
            .await?;
        if ids.is_empty() {
            if from == "-" && node != keys.node {
                // Expired (or holding no connections; it re-adds itself on its next
                // heartbeat): keep the set from growing without bound.
                gone.push(node);
            }
            continue;
        }
        let records: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys.conns(&node))
            .arg(&ids)
            .query_async(con)
            .await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("SMEMBERS").arg(keys.subs(&node, id));
        }
        let topics: Vec<Vec<String>> = pipe.query_async(con).await?;
        for (record, mut topics) in records.into_iter().zip(topics) {
            let Some(mut entry) =
                record.and_then(|r| serde_json::from_str::<DirectoryEntry>(&r).ok())
            else {
                continue;
            };
            topics.sort();
            entry.connection.topics = topics;
            found.push(((node.clone(), entry.connection.id), entry));
        }
        if found.len() > limit {
            break;
        }
    }
    if !gone.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("SREM")
            .arg(&keys.nodes)
            .arg(&gone)
            .query_async(con)
            .await;
    }
    Ok(Page::from_sorted(found, PageRequest { limit, after: None }))
}

/// A page of topics: at most `limit + 1` names from each node, merged in name
/// order, with the subscriber counts of every node summed.
async fn topics_page(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    page: PageRequest<String>,
) -> redis::RedisResult<TopicPage> {
    let limit = page.limit.max(1);
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&keys.nodes)
        .query_async(con)
        .await?;
    if nodes.is_empty() {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let from = page
        .after
        .map_or_else(|| "-".to_owned(), |t| format!("({t}"));
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("ZRANGEBYLEX")
            .arg(keys.topics(node))
            .arg(&from)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
    }
    let per_node: Vec<Vec<String>> = pipe.query_async(con).await?;
    let names: Vec<String> = per_node
        .into_iter()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(limit + 1)
        .collect();
    if names.is_empty() {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("HMGET").arg(keys.counts(node)).arg(&names);
    }
    let counts: Vec<Vec<Option<usize>>> = pipe.query_async(con).await?;
    let mut totals: BTreeMap<String, usize> = names.into_iter().map(|n| (n, 0)).collect();
    for node_counts in counts {
        for ((_, total), n) in totals.iter_mut().zip(node_counts) {
            *total += n.unwrap_or(0);
        }
    }
    let topics = totals
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| (t.clone(), (t, n)));
    Ok(Page::from_sorted(
        topics,
        PageRequest { limit, after: None },
    ))
}

/// Rewrites this node's records from the engine's live state.
async fn resync(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    snapshot: &Snapshot,
    ttl_ms: u64,
    live: &mut HashSet<Uuid>,
) -> redis::RedisResult<()> {
    let entries = snapshot();
    let node = &keys.node;
    let (conns, ids) = (keys.conns(node), keys.ids(node));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(&keys.own()).ignore();
    for chunk in entries.chunks(CHUNK) {
        let mut hset = redis::cmd("HSET");
        let mut zadd = redis::cmd("ZADD");
        hset.arg(&conns);
        zadd.arg(&ids);
        for e in chunk {
            let id = e.connection.id.to_string();
            hset.arg(&id).arg(record(e));
            zadd.arg(0).arg(&id);
        }
        pipe.add_command(hset).ignore();
        pipe.add_command(zadd).ignore();
    }
    for e in &entries {
        let subs = keys.subs(node, &e.connection.id.to_string());
        pipe.cmd("DEL").arg(&subs).ignore();
        if e.connection.topics.is_empty() {
            continue;
        }
        pipe.cmd("SADD")
            .arg(&subs)
            .arg(&e.connection.topics)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&subs).arg(ttl_ms).ignore();
        for topic in &e.connection.topics {
            *counts.entry(topic).or_insert(0) += 1;
        }
    }
    let counted: Vec<(&str, usize)> = counts.into_iter().collect();
    for chunk in counted.chunks(CHUNK) {
        let mut hset = redis::cmd("HSET");
        let mut zadd = redis::cmd("ZADD");
        hset.arg(keys.counts(node));
        zadd.arg(keys.topics(node));
        for (topic, n) in chunk {
            hset.arg(*topic).arg(*n);
            zadd.arg(0).arg(*topic);
        }
        pipe.add_command(hset).ignore();
        pipe.add_command(zadd).ignore();
    }
    for key in keys.own() {
        pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
    }
    pipe.cmd("SADD").arg(&keys.nodes).arg(node).ignore();
    pipe.query_async::<()>(con).await?;
    *live = entries.iter().map(|e| e.connection.id).collect();
    Ok(())
}
