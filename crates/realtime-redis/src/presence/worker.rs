//! The presence worker: one task per node with its own Redis connection that
//! carries out the node's writes and reads in the order asked (consecutive
//! writes in one pipeline), renews the lease every heartbeat, and after any
//! failure reconnects with backoff and rewrites the node's state.

use std::sync::Arc;

use realtime::presence::{
    ClusterCounts, MemberPage, PresenceError, PresenceSettings, PresenceSink, SnapshotFn,
    TopicCounts, UserStatus,
};
use realtime::realtime_core::Topic;
use redis::aio::MultiplexedConnection;
use redis::{Client, Value};
use tokio::sync::mpsc;

use super::keys::{self, Keys};
use super::queue::Shared;
use super::scripts::{self, Loaded, Script};
use super::{Command, Done, Op, member};
use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::link::{self, Link};
use crate::metrics::PresenceMetrics;

/// Commands per pipelined batch.
const BATCH: usize = 256;

/// How long `last_seen` is remembered after a user's last connection closed.
pub(crate) const SEEN_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

pub(crate) struct Worker {
    pub(crate) client: Client,
    pub(crate) config: RedisConfig,
    pub(crate) link: Arc<Link>,
    pub(crate) keys: Keys,
    pub(crate) settings: PresenceSettings,
    pub(crate) snapshot: SnapshotFn,
    pub(crate) sink: PresenceSink,
    /// The event queue's state, when events are on.
    pub(crate) events: Option<Arc<Shared>>,
    pub(crate) metrics: PresenceMetrics,
    /// This node's generation in Redis, new at every rewrite.
    pub(crate) generation: String,
    /// Whether the node held a lease before: a lease found gone after that means
    /// the cluster saw the node's members leave.
    pub(crate) leased: bool,
}

/// A connection with the scripts loaded on its server.
pub(crate) struct Conn {
    pub(crate) con: MultiplexedConnection,
    pub(crate) loaded: Loaded,
}

/// Why a batch stopped: the link failed, or the node left.
enum Stop {
    Failed(redis::RedisError),
    Left,
}

fn unavailable(e: &redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(format!("redis presence: {e}"))
}

impl Worker {
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            let connected = async {
                let mut con = link::connect(&self.client, self.config.command_timeout).await?;
                let loaded = scripts::load(&mut con).await?;
                let mut conn = Conn { con, loaded };
                self.resync(&mut conn).await?;
                Ok::<_, redis::RedisError>(conn)
            }
            .await;
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(e) => {
                    self.metrics.errors("resync").inc();
                    self.link.mark_down(&e);
                    let sleep = tokio::time::sleep(backoff.next_delay());
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            cmd = commands.recv() => match cmd {
                                Some(cmd) => cmd.refuse(&self.link.reason()),
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            };
            self.link.mark_up();
            backoff.reset();
            let mut heartbeat = tokio::time::interval(self.settings.lease.heartbeat());
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        match self.execute(&mut conn, batch).await {
                            Ok(()) => {}
                            Err(Stop::Failed(e)) => break e,
                            Err(Stop::Left) => {
                                // Gone for good: nothing more is written for this node.
                                self.link.mark_down(&"presence left the cluster");
                                while let Some(cmd) = commands.recv().await {
                                    cmd.refuse("redis presence: this node left");
                                }
                                return;
                            }
                        }
                    }
                    _ = heartbeat.tick() => {
                        if let Err(e) = self.heartbeat(&mut conn).await {
                            self.metrics.errors("heartbeat").inc();
                            break e;
                        }
                    }
                }
            };
            self.link.mark_down(&failure);
        }
    }

    /// Carries out a batch in order: consecutive writes in one pipeline, each
    /// read after the writes before it. A Redis failure refuses the rest and is
    /// returned, so the loop reconnects (the resync after it repairs whatever a
    /// failed write left out).
    async fn execute(&mut self, conn: &mut Conn, batch: Vec<Command>) -> Result<(), Stop> {
        let mut writes: Vec<(Op, Done<()>)> = Vec::new();
        let mut batch = batch.into_iter();
        while let Some(cmd) = batch.next() {
            let outcome = match cmd {
                Command::Write(op, done) => {
                    writes.push((op, done));
                    continue;
                }
                Command::Leave(done) => {
                    let flushed = self.flush(conn, &mut writes).await;
                    let left = match flushed {
                        Ok(()) => self.leave(conn).await,
                        Err(e) => Err(e),
                    };
                    let _ = done.send(left.as_ref().map(|_| ()).map_err(unavailable));
                    match left {
                        Ok(()) => {
                            for cmd in batch {
                                cmd.refuse("redis presence: this node left");
                            }
                            return Err(Stop::Left);
                        }
                        Err(e) => Err(e),
                    }
                }
                read => match self.flush(conn, &mut writes).await {
                    Ok(()) => self.read(conn, read).await,
                    Err(e) => {
                        read.refuse(&format!("redis presence: {e}"));
                        Err(e)
                    }
                },
            };
            if let Err(e) = outcome {
                for cmd in batch {
                    cmd.refuse(&format!("redis presence: {e}"));
                }
                return Err(Stop::Failed(e));
            }
        }
        self.flush(conn, &mut writes).await.map_err(Stop::Failed)
    }

    /// Sends the queued writes, one script each, and answers their callers. A
    /// write refused for want of a lease (this node was reaped, or Redis lost its
    /// data) is answered once the node has rewritten itself, which includes it.
    async fn flush(
        &mut self,
        conn: &mut Conn,
        writes: &mut Vec<(Op, Done<()>)>,
    ) -> redis::RedisResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (op, _) in writes.iter() {
            pipe.add_command(self.apply_call(&conn.loaded, "own", &self.keys.node, "", [op]));
        }
        let sent: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut conn.con).await;
        let lost = sent.and_then(|replies| {
            let mut lost = false;
            for reply in &replies {
                let (status, dropped) = apply_status(reply)?;
                self.count_dropped(dropped);
                lost |= status == -1;
            }
            Ok(lost)
        });
        let outcome = match lost {
            Ok(true) => self.resync(conn).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        for (_, done) in writes.drain(..) {
            let _ = done.send(outcome.as_ref().map(|_| ()).map_err(unavailable));
        }
        outcome
    }

    pub(crate) fn count_dropped(&self, dropped: i64) {
        if let (Some(events), Ok(n)) = (&self.events, u64::try_from(dropped)) {
            events.add_dropped(n);
        }
    }

    /// An `apply.lua` call for `ops` of `node` in `mode` (`own` or `reap`).
    pub(crate) fn apply_call<'a>(
        &self,
        loaded: &Loaded,
        mode: &str,
        node: &str,
        generation: &str,
        ops: impl IntoIterator<Item = &'a Op>,
    ) -> redis::Cmd {
        let k = &self.keys;
        let mut key_list = vec![
            k.leases(),
            k.reaping(),
            k.gens(),
            k.owned(node),
            k.online(),
            k.stats(),
            k.announced(),
            k.pending(),
            k.events(),
        ];
        let mut args: Vec<Vec<u8>> = vec![
            mode.into(),
            node.into(),
            generation.into(),
            self.settings.lease.lease().as_millis().to_string().into(),
            if self.events.is_some() { "1" } else { "0" }.into(),
            self.settings.event_queue.to_string().into(),
            uuid::Uuid::new_v4().simple().to_string().into(),
            SEEN_TTL_MS.to_string().into(),
        ];
        for op in ops {
            let sign = if op.add { "+" } else { "-" };
            match &op.entry {
                keys::Entry::Connection { user, conn } => {
                    key_list.push(k.seen(user));
                    args.extend([
                        sign.into(),
                        "c".into(),
                        user.clone().into(),
                        conn.to_string().into(),
                    ]);
                }
                keys::Entry::Member { topic, user, conn } => {
                    key_list.extend([k.members(topic), k.info(topic), k.tusers(topic)]);
                    args.extend([
                        sign.into(),
                        "m".into(),
                        user.clone().into(),
                        conn.to_string().into(),
                        topic.clone().into(),
                    ]);
                    if op.add {
                        args.push(op.record.clone().unwrap_or_else(|| "{}".into()).into());
                    }
                }
            }
        }
        let mut cmd = loaded.call(Script::Apply, &key_list);
        for arg in args {
            cmd.arg(arg);
        }
        cmd
    }

    /// Answers one read.
    async fn read(&self, conn: &mut Conn, read: Command) -> redis::RedisResult<()> {
        fn answer<T>(done: Done<T>, got: &redis::RedisResult<T>) -> redis::RedisResult<()>
        where
            T: Clone,
        {
            let _ = done.send(got.as_ref().map_err(unavailable).cloned());
            got.as_ref().map(drop).map_err(Clone::clone)
        }
        let k = &self.keys;
        let con = &mut conn.con;
        match read {
            Command::Members {
                topic,
                after,
                limit,
                done,
            } => {
                let got = members_page(conn, k, &topic, after, limit).await;
                answer(done, &got)
            }
            Command::TopicCounts(topic, done) => {
                let got = redis::pipe()
                    .cmd("ZCARD")
                    .arg(k.members(topic.as_str()))
                    .cmd("HLEN")
                    .arg(k.tusers(topic.as_str()))
                    .query_async::<(u64, u64)>(con)
                    .await
                    .map(|(connections, users)| TopicCounts { connections, users });
                answer(done, &got)
            }
            Command::User(user, done) => {
                let got = redis::pipe()
                    .cmd("HGET")
                    .arg(k.online())
                    .arg(&user)
                    .cmd("GET")
                    .arg(k.seen(&user))
                    .query_async::<(Option<i64>, Option<u64>)>(con)
                    .await
                    .map(|(connections, seen)| {
                        let connections = connections.unwrap_or(0).max(0) as u64;
                        UserStatus {
                            connections,
                            last_seen_ms: if connections == 0 { seen } else { None },
                        }
                    });
                answer(done, &got)
            }
            Command::Counts(done) => {
                let got = redis::pipe()
                    .cmd("HLEN")
                    .arg(k.online())
                    .cmd("HGET")
                    .arg(k.stats())
                    .arg("connections")
                    .query_async::<(u64, Option<i64>)>(con)
                    .await
                    .map(|(users, connections)| ClusterCounts {
                        users,
                        connections: connections.unwrap_or(0).max(0) as u64,
                    });
                answer(done, &got)
            }
            Command::Ack(key, done) => {
                let got = match &self.events {
                    Some(events) => events.ack(con, k, &key).await,
                    None => Ok(()),
                };
                answer(done, &got)
            }
            Command::Write(_, done) | Command::Leave(done) => {
                // Handled by `execute`; never sent here.
                let _ = done.send(Err(PresenceError::Unavailable("misrouted".into())));
                Ok(())
            }
        }
    }
}

/// The `{status, dropped}` an `apply.lua` call answers.
pub(crate) fn apply_status(reply: &Value) -> redis::RedisResult<(i64, i64)> {
    let items = scripts::items(reply).ok_or_else(|| scripts::bad_reply("apply"))?;
    match items {
        [status, dropped, ..] => Ok((
            scripts::int(status).ok_or_else(|| scripts::bad_reply("apply status"))?,
            scripts::int(dropped).unwrap_or(0),
        )),
        _ => Err(scripts::bad_reply("apply")),
    }
}

/// At most `limit` members after the cursor, read with one script.
async fn members_page(
    conn: &mut Conn,
    k: &Keys,
    topic: &Topic,
    after: Option<String>,
    limit: usize,
) -> redis::RedisResult<MemberPage> {
    let limit = limit.max(1);
    let from: Vec<u8> = match &after {
        Some(cursor) => [b"(".as_slice(), &keys::uncursor(cursor)].concat(),
        None => b"-".to_vec(),
    };
    let reply: Value = conn
        .loaded
        .call(
            Script::Members,
            &[k.members(topic.as_str()), k.info(topic.as_str())],
        )
        .arg(from)
        .arg(limit + 1)
        .query_async(&mut conn.con)
        .await?;
    let items = scripts::items(&reply).ok_or_else(|| scripts::bad_reply("members"))?;
    let mut names = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        let [name, record] = pair else { break };
        let Some(name) = scripts::text(name) else {
            continue;
        };
        names.push((name, scripts::text(record).unwrap_or_default()));
    }
    let next = (names.len() > limit).then(|| keys::cursor(&names[limit - 1].0));
    names.truncate(limit);
    let members = names
        .into_iter()
        .filter_map(|(name, record)| {
            let (user, conn) = keys::split_member(&name)?;
            Some(member(user, conn, &record))
        })
        .collect();
    Ok(MemberPage { members, next })
}
