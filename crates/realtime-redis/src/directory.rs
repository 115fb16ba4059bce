//! [`RedisDirectory`]: the cluster-wide connection view in Redis, with expiry.
//!
//! Each node keeps one hash, `{prefix}:conns:{node}` (connection id → JSON record),
//! and its name in the set `{prefix}:nodes`. The hash's expiry is pushed forward on
//! every heartbeat, so a node that dies without cleaning up disappears from the
//! view once its hash expires (3 heartbeats). After a reconnect, or if the hash is
//! found missing (Redis restarted empty), the node rewrites all of its records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use realtime::cluster::bus::{
    BusError, BusFuture, BusStatus, ClusterDirectory, DirectoryEntry, ListFuture, Snapshot,
};
use redis::Client;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::link::{self, Link};

enum Command {
    Upsert(DirectoryEntry, oneshot::Sender<Result<(), BusError>>),
    Remove(Uuid, oneshot::Sender<Result<(), BusError>>),
    Leave(oneshot::Sender<Result<(), BusError>>),
    List(oneshot::Sender<Result<Vec<DirectoryEntry>, BusError>>),
}

impl Command {
    fn refuse(self, reason: &str) {
        let err = || BusError::Unavailable(reason.to_owned());
        match self {
            Command::Upsert(_, done) | Command::Remove(_, done) | Command::Leave(done) => {
                let _ = done.send(Err(err()));
            }
            Command::List(done) => {
                let _ = done.send(Err(err()));
            }
        }
    }
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
    pub(crate) fn new(client: Client, config: RedisConfig) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        RedisDirectory {
            client,
            config,
            link: Arc::new(Link::new("directory")),
            commands,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), BusError>>) -> Command,
    ) -> BusFuture {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(make(done));
        Box::pin(async move {
            result
                .await
                .unwrap_or_else(|_| Err(BusError::Unavailable("redis directory stopped".into())))
        })
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
        self.ask(|done| Command::Upsert(entry, done))
    }

    fn remove(&self, connection: Uuid) -> BusFuture {
        self.ask(|done| Command::Remove(connection, done))
    }

    fn list(&self) -> ListFuture {
        let (done, result) = oneshot::channel();
        let _ = self.commands.send(Command::List(done));
        Box::pin(async move {
            result
                .await
                .unwrap_or_else(|_| Err(BusError::Unavailable("redis directory stopped".into())))
        })
    }

    fn leave(&self) -> BusFuture {
        self.ask(Command::Leave)
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

#[derive(Clone)]
struct Keys {
    prefix: String,
    node: String,
    nodes: String,
    own: String,
}

impl Keys {
    fn new(prefix: &str, node: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            nodes: format!("{prefix}:nodes"),
            own: format!("{prefix}:conns:{node}"),
        }
    }

    fn of(&self, node: &str) -> String {
        format!("{}:conns:{node}", self.prefix)
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
    loop {
        let connected = async {
            let mut con = link::connect(&client, config.command_timeout).await?;
            resync(&mut con, &keys, &snapshot, ttl_ms).await?;
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
                    if let Err(e) = execute(&mut con, &keys, cmd, ttl_ms).await {
                        break e;
                    }
                }
                _ = heartbeat.tick() => {
                    let refreshed: redis::RedisResult<(i64, i64)> = redis::pipe()
                        .cmd("SADD").arg(&keys.nodes).arg(&keys.node)
                        .cmd("PEXPIRE").arg(&keys.own).arg(ttl_ms)
                        .query_async(&mut con)
                        .await;
                    match refreshed {
                        // The hash is gone although we hold connections: Redis lost
                        // its data without our link noticing. Write it again.
                        Ok((_, 0)) if !snapshot().is_empty() => {
                            if let Err(e) = resync(&mut con, &keys, &snapshot, ttl_ms).await {
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

/// Carries out one command. A Redis failure is returned (after refusing the
/// command) so the loop reconnects.
async fn execute(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    cmd: Command,
    ttl_ms: u64,
) -> redis::RedisResult<()> {
    match cmd {
        Command::Upsert(entry, done) => {
            let json = serde_json::to_string(&entry).unwrap_or_default();
            let r: redis::RedisResult<()> = redis::pipe()
                .cmd("HSET")
                .arg(&keys.own)
                .arg(entry.connection.id.to_string())
                .arg(json)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&keys.own)
                .arg(ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(&keys.nodes)
                .arg(&keys.node)
                .ignore()
                .query_async(con)
                .await;
            answer(done, r)
        }
        Command::Remove(id, done) => {
            let r: redis::RedisResult<()> = redis::cmd("HDEL")
                .arg(&keys.own)
                .arg(id.to_string())
                .query_async(con)
                .await;
            answer(done, r)
        }
        Command::Leave(done) => {
            let r: redis::RedisResult<()> = redis::pipe()
                .cmd("DEL")
                .arg(&keys.own)
                .ignore()
                .cmd("SREM")
                .arg(&keys.nodes)
                .arg(&keys.node)
                .ignore()
                .query_async(con)
                .await;
            answer(done, r)
        }
        Command::List(done) => match list(con, keys).await {
            Ok(entries) => {
                let _ = done.send(Ok(entries));
                Ok(())
            }
            Err(e) => {
                let _ = done.send(Err(BusError::Unavailable(format!("redis directory: {e}"))));
                Err(e)
            }
        },
    }
}

fn answer(
    done: oneshot::Sender<Result<(), BusError>>,
    r: redis::RedisResult<()>,
) -> redis::RedisResult<()> {
    let _ = done.send(
        r.as_ref()
            .map(|_| ())
            .map_err(|e| BusError::Unavailable(format!("redis directory: {e}"))),
    );
    r
}

/// Every record of every node whose hash has not expired.
async fn list(
    con: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<Vec<DirectoryEntry>> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&keys.nodes)
        .query_async(con)
        .await?;
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("HGETALL").arg(keys.of(node));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(con).await?;
    let mut entries = Vec::new();
    let mut gone = Vec::new();
    for (node, hash) in nodes.iter().zip(hashes) {
        if hash.is_empty() && node != &keys.node {
            gone.push(node.clone());
        }
        entries.extend(
            hash.values()
                .filter_map(|json| serde_json::from_str::<DirectoryEntry>(json).ok()),
        );
    }
    if !gone.is_empty() {
        // Expired nodes (or nodes with no connections, which re-add themselves on
        // their next heartbeat): keep the set from growing without bound.
        let _: redis::RedisResult<()> = redis::cmd("SREM")
            .arg(&keys.nodes)
            .arg(&gone)
            .query_async(con)
            .await;
    }
    entries.sort_by(|a, b| {
        a.connection
            .connected_at
            .cmp(&b.connection.connected_at)
            .then(a.connection.id.cmp(&b.connection.id))
    });
    Ok(entries)
}

/// Rewrites this node's records from the engine's live state.
async fn resync(
    con: &mut MultiplexedConnection,
    keys: &Keys,
    snapshot: &Snapshot,
    ttl_ms: u64,
) -> redis::RedisResult<()> {
    let entries = snapshot();
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(&keys.own).ignore();
    for chunk in entries.chunks(500) {
        let mut hset = redis::cmd("HSET");
        hset.arg(&keys.own);
        for e in chunk {
            hset.arg(e.connection.id.to_string())
                .arg(serde_json::to_string(e).unwrap_or_default());
        }
        pipe.add_command(hset).ignore();
    }
    pipe.cmd("PEXPIRE").arg(&keys.own).arg(ttl_ms).ignore();
    pipe.cmd("SADD").arg(&keys.nodes).arg(&keys.node).ignore();
    pipe.query_async::<()>(con).await
}
