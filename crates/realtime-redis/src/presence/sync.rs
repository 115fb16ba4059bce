//! The node's lease and everything that keeps presence true over time: the
//! rewrite from the engine's snapshot (after a reconnect, or when the lease is
//! found gone), the heartbeat (renew, reap dead nodes, sweep due offline and
//! vacated events), and the graceful leave.

use std::collections::{BTreeMap, HashSet};

use realtime::presence::{Member, PresenceNotice};
use realtime::realtime_core::Topic;
use redis::Value;

use super::keys::Entry;
use super::scripts::{self, Script};
use super::worker::{Conn, Worker, apply_status};
use super::{Op, member, record};

/// Entries per script when rewriting or reaping a node: small enough that no
/// script holds Redis for long, whatever the node's size.
const CHUNK: usize = 256;
/// Dead nodes one heartbeat reaps at most (the rest wait for the next one).
const REAPS_PER_BEAT: usize = 8;
/// Rounds of due entries one heartbeat sweeps at most.
const SWEEPS_PER_BEAT: usize = 16;

impl Worker {
    fn lease_ms(&self) -> String {
        self.settings.lease.lease().as_millis().to_string()
    }

    /// Renews the lease; `generation` non-empty takes it even if it was gone.
    /// Returns `(had, renewed)`.
    async fn renew(&self, conn: &mut Conn, generation: &str) -> redis::RedisResult<(bool, bool)> {
        let k = &self.keys;
        let reply: Vec<i64> = conn
            .loaded
            .call(Script::Renew, &[k.leases(), k.reaping(), k.gens()])
            .arg(&k.node)
            .arg(self.lease_ms())
            .arg(generation)
            .query_async(&mut conn.con)
            .await?;
        match reply.as_slice() {
            [had, renewed] => Ok((*had == 1, *renewed == 1)),
            _ => Err(scripts::bad_reply("renew")),
        }
    }

    /// Rewrites this node's entries from the snapshot under a new generation:
    /// what Redis holds and the engine does not is removed, what the engine holds
    /// and Redis does not is added (each as a connect or a leave would), the rest
    /// is left alone. If the lease was gone, the members written again are told
    /// to the engine as `Restored`.
    pub(crate) async fn resync(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let generation = uuid::Uuid::new_v4().simple().to_string();
        let (had, _) = self.renew(conn, &generation).await?;
        self.generation = generation;
        let restored = self.leased && !had;
        self.leased = true;
        let owned = self.owned(conn, &self.keys.owned(&self.keys.node)).await?;
        let snapshot = (self.snapshot)();
        let mut wanted: BTreeMap<String, Op> = BTreeMap::new();
        for (user, conn) in snapshot.connections {
            let entry = Entry::Connection { user, conn };
            wanted.insert(
                entry.encode(),
                Op {
                    add: true,
                    entry,
                    record: None,
                },
            );
        }
        let mut members: BTreeMap<String, (Topic, Member)> = BTreeMap::new();
        for (topic, m) in snapshot.members {
            let entry = Entry::member(&topic, &m.user_id, m.connection_id);
            let text = entry.encode();
            wanted.insert(
                text.clone(),
                Op {
                    add: true,
                    entry,
                    record: Some(record(&m)),
                },
            );
            members.insert(text, (topic, m));
        }
        let mut ops: Vec<Op> = owned
            .iter()
            .filter(|text| !wanted.contains_key(*text))
            .filter_map(|text| Entry::decode(text))
            .map(|entry| Op {
                add: false,
                entry,
                record: None,
            })
            .collect();
        // Members Redis holds for this node and the engine does not (an earlier
        // run under the same node id that was killed, or connections that closed
        // while Redis was out of reach): the other nodes' subscribers saw them
        // join, so they are told they left, as for a reaped node.
        let left: Vec<(Topic, Member)> = ops
            .iter()
            .filter_map(|op| match &op.entry {
                Entry::Member { topic, user, conn } => Some((
                    Topic::parse_with_max(topic, usize::MAX).ok()?,
                    Member {
                        user_id: user.clone(),
                        connection_id: *conn,
                        connected_at: String::new(),
                        info: serde_json::Map::new(),
                    },
                )),
                Entry::Connection { .. } => None,
            })
            .collect();
        let mut joined = Vec::new();
        for (text, op) in wanted {
            if !owned.contains(&text) {
                if let Some(m) = members.remove(&text) {
                    joined.push(m);
                }
                ops.push(op);
            }
        }
        for chunk in ops.chunks(CHUNK) {
            let node = self.keys.node.clone();
            let call = self.apply_call(&conn.loaded, "own", &node, "", chunk);
            let reply: Value = call.query_async(&mut conn.con).await?;
            let (status, dropped) = apply_status(&reply)?;
            self.count_dropped(dropped);
            if status != 1 {
                // The lease went again mid-way (another FLUSHALL): start over.
                return Err(scripts::bad_reply("lease lost while rewriting"));
            }
        }
        if let Some(events) = &self.events {
            events.create_group(&mut conn.con, &self.keys).await?;
        }
        if !left.is_empty() {
            tracing::info!(
                node = %self.keys.node,
                members = left.len(),
                "presence entries this node no longer holds were removed from Redis"
            );
            (self.sink)(PresenceNotice::Reaped {
                node: self.keys.node.clone(),
                left,
            });
        }
        if restored && !joined.is_empty() {
            tracing::warn!(
                node = %self.keys.node,
                members = joined.len(),
                "presence entries of this node were gone from Redis; written again"
            );
            (self.sink)(PresenceNotice::Restored { joined });
        }
        Ok(())
    }

    /// Every entry of an owned set.
    async fn owned(&self, conn: &mut Conn, key: &str) -> redis::RedisResult<HashSet<String>> {
        let mut found = HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn.con)
                .await?;
            found.extend(batch);
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Renew the lease (rewriting the node if it was gone), reap dead nodes,
    /// sweep due events, and keep the event claims fresh.
    pub(crate) async fn heartbeat(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let (_, renewed) = self.renew(conn, "").await?;
        if !renewed {
            self.resync(conn).await?;
        }
        for _ in 0..REAPS_PER_BEAT {
            let claimed: Value = conn
                .loaded
                .call(
                    Script::Claim,
                    &[self.keys.leases(), self.keys.reaping(), self.keys.gens()],
                )
                .arg(&self.keys.node)
                .arg(self.lease_ms())
                .query_async(&mut conn.con)
                .await?;
            let items = scripts::items(&claimed).unwrap_or_default();
            let [node, generation] = items else { break };
            let (Some(node), Some(generation)) = (scripts::text(node), scripts::text(generation))
            else {
                break;
            };
            self.reap(conn, &node, &generation).await?;
        }
        if let Some(events) = self.events.clone() {
            self.sweep(conn).await?;
            events
                .maintain(&mut conn.con, &self.keys, self.settings.lease.lease())
                .await?;
        }
        Ok(())
    }

    /// Removes a dead node's entries, a chunk per script, each as its own leave
    /// or disconnect would; then its owned set and records. Stops if the node
    /// comes back (its generation moves).
    async fn reap(
        &mut self,
        conn: &mut Conn,
        node: &str,
        generation: &str,
    ) -> redis::RedisResult<()> {
        let owned = self.keys.owned(node);
        let mut left: Vec<(Topic, Member)> = Vec::new();
        let finished = loop {
            let status: i64 = self.finish(conn, node, generation).await?;
            if status != 0 {
                break status == 1;
            }
            let texts: Vec<String> = redis::cmd("SRANDMEMBER")
                .arg(&owned)
                .arg(CHUNK)
                .query_async(&mut conn.con)
                .await?;
            let (ops, junk): (Vec<_>, Vec<_>) = texts
                .iter()
                .map(|t| (t, Entry::decode(t)))
                .partition(|(_, e)| e.is_some());
            if !junk.is_empty() {
                // Not ours to read: drop it so the reap can finish.
                let junk: Vec<&String> = junk.into_iter().map(|(t, _)| t).collect();
                redis::cmd("SREM")
                    .arg(&owned)
                    .arg(junk)
                    .query_async::<()>(&mut conn.con)
                    .await?;
            }
            let ops: Vec<Op> = ops
                .into_iter()
                .filter_map(|(_, e)| e)
                .map(|entry| Op {
                    add: false,
                    entry,
                    record: None,
                })
                .collect();
            if ops.is_empty() {
                continue;
            }
            let reply: Value = self
                .apply_call(&conn.loaded, "reap", node, generation, &ops)
                .query_async(&mut conn.con)
                .await?;
            let (status, dropped) = apply_status(&reply)?;
            self.count_dropped(dropped);
            if status != 1 {
                break false;
            }
            let items = scripts::items(&reply).unwrap_or_default();
            for quad in items[2..].chunks(4) {
                let [topic, user, conn_id, data] = quad else {
                    continue;
                };
                let (Some(topic), Some(user), Some(conn_id)) = (
                    scripts::text(topic).and_then(|t| Topic::parse(&t).ok()),
                    scripts::text(user),
                    scripts::text(conn_id).and_then(|c| c.parse().ok()),
                ) else {
                    continue;
                };
                let data = scripts::text(data).unwrap_or_default();
                left.push((topic, member(user, conn_id, &data)));
            }
        };
        if finished {
            self.metrics.reaped.inc();
            if let Some(events) = &self.events {
                events.take_over(&mut conn.con, &self.keys, node).await?;
            }
            tracing::info!(node, members = left.len(), "reaped a dead node's presence");
        }
        if finished || !left.is_empty() {
            (self.sink)(PresenceNotice::Reaped {
                node: node.to_owned(),
                left,
            });
        }
        Ok(())
    }

    async fn finish(
        &self,
        conn: &mut Conn,
        node: &str,
        generation: &str,
    ) -> redis::RedisResult<i64> {
        let k = &self.keys;
        conn.loaded
            .call(
                Script::Finish,
                &[k.reaping(), k.owned(node), k.gens(), k.leases()],
            )
            .arg(node)
            .arg(generation)
            .query_async(&mut conn.con)
            .await
    }

    /// Queues the offline/vacated events whose grace has passed.
    async fn sweep(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let k = self.keys.clone();
        let grace = self.settings.offline_grace.as_millis().to_string();
        for _ in 0..SWEEPS_PER_BEAT {
            let due: Vec<String> = conn
                .loaded
                .call(Script::Due, &[k.pending()])
                .arg(&grace)
                .arg(CHUNK)
                .query_async(&mut conn.con)
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut key_list = vec![k.pending(), k.announced(), k.online(), k.events()];
            for entry in &due {
                if let Some(topic) = entry.strip_prefix("t:") {
                    key_list.push(k.members(topic));
                }
            }
            let dropped: i64 = conn
                .loaded
                .call(Script::Sweep, &key_list)
                .arg(&grace)
                .arg(self.settings.event_queue)
                .arg(uuid::Uuid::new_v4().simple().to_string())
                .arg(&due)
                .query_async(&mut conn.con)
                .await?;
            self.count_dropped(dropped);
            if due.len() < CHUNK {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Graceful leave: this node removes its own entries (as their disconnects
    /// would) and gives up its lease. No `Reaped` notice: nobody died.
    pub(crate) async fn leave(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let node = self.keys.node.clone();
        let generation = self.generation.clone();
        loop {
            let owned = self.owned(conn, &self.keys.owned(&node)).await?;
            let ops: Vec<Op> = owned
                .iter()
                .filter_map(|t| Entry::decode(t))
                .map(|entry| Op {
                    add: false,
                    entry,
                    record: None,
                })
                .collect();
            for chunk in ops.chunks(CHUNK) {
                let reply: Value = self
                    .apply_call(&conn.loaded, "own", &node, "", chunk)
                    .query_async(&mut conn.con)
                    .await?;
                let (status, dropped) = apply_status(&reply)?;
                self.count_dropped(dropped);
                if status == -1 {
                    // Reaped already: the reaper removes the rest.
                    return Ok(());
                }
            }
            if ops.is_empty() && !owned.is_empty() {
                // Entries we cannot read: remove them with the set.
                redis::cmd("DEL")
                    .arg(self.keys.owned(&node))
                    .query_async::<()>(&mut conn.con)
                    .await?;
            }
            match self.finish(conn, &node, &generation).await? {
                0 => continue,
                _ => return Ok(()),
            }
        }
    }
}
