//! [`RedisEvents`]: the webhook [`EventQueue`] on the Redis stream
//! `{prefix}:presence:events` with the consumer group `webhooks`, one consumer
//! per node. A reader task reads new events with `XREADGROUP` on a connection
//! of its own (it blocks) whenever a `next` waits and none is ready, so a
//! cancelled `next` loses nothing. Events are kept claimed by their live reader (its heartbeat refreshes the
//! claims), taken over by a survivor when the reader dies (at the reap, and
//! by `XAUTOCLAIM` of anything idle longer than a lease), and removed with
//! `XACK` + `XDEL` once delivered.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use realtime::presence::{EventQueue, PresenceError, PresenceFuture, QueuedEvent};
use realtime::realtime_core::message::rfc3339_millis;
use realtime::realtime_core::{EventKind, PresenceEvent};
use redis::aio::MultiplexedConnection;
use redis::{Client, Value};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, oneshot};

use super::Command;
use super::keys::Keys;
use super::scripts;
use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::link;
use crate::metrics::PresenceMetrics;

/// The consumer group every node reads the events stream in.
pub(crate) const GROUP: &str = "webhooks";
/// Entries claimed or refreshed per command.
const COUNT: usize = 64;
/// New entries read at a time: about what the webhook sender has in flight.
const READ_COUNT: usize = 16;

/// What the worker and the reader share: events read but not yet handed out,
/// and the keys of those this node holds (handed out or waiting, not acked).
#[derive(Default)]
pub(crate) struct Shared {
    ready: Mutex<VecDeque<QueuedEvent>>,
    held: Mutex<HashSet<String>>,
    /// Delivered, but the XACK did not get through yet.
    unacked: Mutex<HashSet<String>>,
    depth: AtomicU64,
    dropped: AtomicU64,
    /// `next` calls waiting, and the reader's wake-up when one starts.
    waiting: AtomicUsize,
    wanted: Notify,
    /// Events were added to `ready`.
    arrived: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
}

impl Shared {
    pub(crate) fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn take(&self, entries: Vec<QueuedEvent>) {
        if entries.is_empty() {
            return;
        }
        {
            let mut held = lock(&self.held);
            let mut ready = lock(&self.ready);
            for e in entries {
                if held.insert(e.key.clone()) {
                    ready.push_back(e);
                }
            }
        }
        self.arrived.notify_waiters();
    }

    /// Waits until an event is here. Cancelling it loses nothing: events are
    /// read by the reader task into `ready`, never into a caller's future.
    async fn next(&self) -> QueuedEvent {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(event) = self.pop() {
                return event;
            }
            let _waiting = Waiting::new(self);
            self.wanted.notify_one();
            arrived.await;
        }
    }

    fn wants(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0 && lock(&self.ready).is_empty()
    }

    fn pop(&self) -> Option<QueuedEvent> {
        lock(&self.ready).pop_front()
    }

    /// Creates the consumer group (from the stream's start, so events queued
    /// before it existed are delivered too).
    pub(crate) async fn create_group(
        &self,
        con: &mut MultiplexedConnection,
        keys: &Keys,
    ) -> redis::RedisResult<()> {
        create_group(con, keys).await
    }

    /// Removes a delivered event; one that cannot be removed now is retried on
    /// the next heartbeat (and kept claimed meanwhile).
    pub(crate) async fn ack(
        &self,
        con: &mut MultiplexedConnection,
        keys: &Keys,
        key: &str,
    ) -> redis::RedisResult<()> {
        lock(&self.unacked).insert(key.to_owned());
        self.flush_acks(con, keys).await
    }

    async fn flush_acks(
        &self,
        con: &mut MultiplexedConnection,
        keys: &Keys,
    ) -> redis::RedisResult<()> {
        let ids: Vec<String> = lock(&self.unacked).drain().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let sent = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(keys.events())
            .arg(GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(keys.events())
            .arg(&ids)
            .ignore()
            .query_async::<()>(con)
            .await;
        match sent {
            Ok(()) => {
                let mut held = lock(&self.held);
                for id in &ids {
                    held.remove(id);
                }
                Ok(())
            }
            Err(e) => {
                lock(&self.unacked).extend(ids);
                Err(e)
            }
        }
    }

    /// Heartbeat work: retry acks, refresh the claims this node holds, take
    /// over whatever stayed unacknowledged longer than a lease, and measure
    /// the depth.
    pub(crate) async fn maintain(
        &self,
        con: &mut MultiplexedConnection,
        keys: &Keys,
        lease: Duration,
    ) -> redis::RedisResult<()> {
        match self.maintain_group(con, keys, lease).await {
            Err(e) if is_code(&e, "NOGROUP") => create_group(con, keys).await,
            other => other,
        }
    }

    async fn maintain_group(
        &self,
        con: &mut MultiplexedConnection,
        keys: &Keys,
        lease: Duration,
    ) -> redis::RedisResult<()> {
        self.flush_acks(con, keys).await?;
        let held: Vec<String> = lock(&self.held).iter().cloned().collect();
        for chunk in held.chunks(COUNT) {
            // Resets their idle time; entries gone meanwhile are dropped from it.
            let kept: Vec<String> = redis::cmd("XCLAIM")
                .arg(keys.events())
                .arg(GROUP)
                .arg(&keys.node)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .query_async(con)
                .await?;
            let kept: HashSet<&String> = kept.iter().collect();
            let mut mine = lock(&self.held);
            for id in chunk.iter().filter(|id| !kept.contains(id)) {
                mine.remove(id);
            }
        }
        let mut cursor = "0-0".to_owned();
        for _ in 0..16 {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(keys.events())
                .arg(GROUP)
                .arg(&keys.node)
                .arg(lease.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(COUNT)
                .query_async(con)
                .await?;
            let items = scripts::items(&reply).unwrap_or_default();
            let (Some(next), Some(entries)) = (
                items.first().and_then(scripts::text),
                items.get(1).and_then(scripts::items),
            ) else {
                break;
            };
            let taken = parse_entries(entries);
            if !taken.is_empty() {
                tracing::info!(
                    events = taken.len(),
                    "took over unacknowledged webhook events"
                );
            }
            self.take(taken);
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        let (len, pending): (u64, Value) = redis::pipe()
            .cmd("XLEN")
            .arg(keys.events())
            .cmd("XPENDING")
            .arg(keys.events())
            .arg(GROUP)
            .query_async(con)
            .await?;
        let pending = scripts::items(&pending)
            .and_then(|i| i.first())
            .and_then(scripts::int)
            .unwrap_or(0)
            .max(0) as u64;
        self.depth
            .store(len.saturating_sub(pending), Ordering::Relaxed);
        Ok(())
    }

    /// Takes over a reaped node's unacknowledged events at once, and removes
    /// its consumer from the group.
    pub(crate) async fn take_over(
        &self,
        con: &mut MultiplexedConnection,
        keys: &Keys,
        dead: &str,
    ) -> redis::RedisResult<()> {
        for _ in 0..1024 {
            let pending: Value = match redis::cmd("XPENDING")
                .arg(keys.events())
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(COUNT)
                .arg(dead)
                .query_async(con)
                .await
            {
                Err(e) if is_code(&e, "NOGROUP") => return Ok(()),
                other => other?,
            };
            let ids: Vec<String> = scripts::items(&pending)
                .unwrap_or_default()
                .iter()
                .filter_map(|row| scripts::items(row)?.first().and_then(scripts::text))
                .collect();
            if ids.is_empty() {
                break;
            }
            let claimed: Value = redis::cmd("XCLAIM")
                .arg(keys.events())
                .arg(GROUP)
                .arg(&keys.node)
                .arg(0)
                .arg(&ids)
                .query_async(con)
                .await?;
            self.take(parse_entries(scripts::items(&claimed).unwrap_or_default()));
        }
        redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(keys.events())
            .arg(GROUP)
            .arg(dead)
            .query_async::<()>(con)
            .await
    }
}

/// Counts a waiting `next` for as long as it waits.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn create_group(con: &mut MultiplexedConnection, keys: &Keys) -> redis::RedisResult<()> {
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.events())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(con)
        .await;
    match created {
        Err(e) if is_code(&e, "BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Stream entries (`[id, [field, value, ...]]`) as events. Entries deleted
/// meanwhile (nil fields) and malformed ones are skipped.
fn parse_entries(entries: &[Value]) -> Vec<QueuedEvent> {
    entries.iter().filter_map(parse_entry).collect()
}

fn parse_entry(entry: &Value) -> Option<QueuedEvent> {
    let [id, fields] = scripts::items(entry)? else {
        return None;
    };
    let key = scripts::text(id)?;
    let fields = scripts::items(fields)?;
    let mut event = PresenceEvent {
        id: String::new(),
        kind: EventKind::UserOnline,
        timestamp: String::new(),
        user_id: None,
        topic: None,
    };
    let mut kind = None;
    for pair in fields.chunks(2) {
        let [name, value] = pair else { continue };
        let (Some(name), Some(value)) = (scripts::text(name), scripts::text(value)) else {
            continue;
        };
        match name.as_str() {
            "id" => event.id = value,
            "type" => kind = EventKind::parse(&value),
            "ts" => event.timestamp = timestamp(value.parse().ok()?),
            "user_id" => event.user_id = Some(value),
            "topic" => event.topic = Some(value),
            _ => {}
        }
    }
    event.kind = kind?;
    (!event.id.is_empty() && !event.timestamp.is_empty()).then_some(QueuedEvent { key, event })
}

/// Milliseconds since the epoch as the events' RFC 3339 text.
fn timestamp(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    rfc3339_millis(t)
}

/// The webhook event queue of one node. Got from
/// [`PresenceStore::events`](realtime::presence::PresenceStore::events) once the
/// store was started with events on.
pub struct RedisEvents {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    client: Client,
    keys: Keys,
    timeout: Duration,
    block: Duration,
    backoff: (Duration, Duration),
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    metrics: PresenceMetrics,
}

impl RedisEvents {
    pub(crate) fn new(
        client: Client,
        config: &RedisConfig,
        keys: Keys,
        commands: mpsc::UnboundedSender<Command>,
        metrics: PresenceMetrics,
    ) -> Self {
        RedisEvents {
            inner: Arc::new(Inner {
                client,
                keys,
                timeout: config.command_timeout,
                // Shorter than the reply timeout, so an empty wait is not an error.
                block: (config.command_timeout / 2).min(Duration::from_secs(1)),
                backoff: (config.reconnect_min, config.reconnect_max),
                shared: Arc::new(Shared::default()),
                commands,
                metrics,
            }),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.inner.shared.clone()
    }

    /// Starts the reader task on `runtime`.
    pub(crate) fn start(&self, runtime: &tokio::runtime::Handle) {
        runtime.spawn(read_events(Arc::downgrade(&self.inner)));
    }
}

/// The reader task: reads new events from the stream while some `next` waits
/// and nothing is ready, on a connection of its own (XREADGROUP blocks it).
/// Ends once the queue is dropped.
pub(crate) async fn read_events(inner: Weak<Inner>) {
    let Some(first) = inner.upgrade() else { return };
    let mut backoff = Backoff::new(first.backoff.0, first.backoff.1);
    drop(first);
    let mut reader: Option<MultiplexedConnection> = None;
    loop {
        let Some(me) = inner.upgrade() else { return };
        if !me.shared.wants() {
            let wanted = me.shared.wanted.notified();
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            if !me.shared.wants() {
                // Bounded, so a dropped queue is noticed.
                let _ = tokio::time::timeout(Duration::from_secs(1), wanted).await;
                continue;
            }
        }
        let con = match reader.clone() {
            Some(con) => Ok(con),
            None => link::connect(&me.client, me.timeout + me.block).await,
        };
        let read = match con {
            Ok(mut con) => {
                reader = Some(con.clone());
                me.read(&mut con).await
            }
            Err(e) => Err(e),
        };
        match read {
            Ok(events) => {
                backoff.reset();
                me.shared.take(events);
            }
            Err(e) if is_code(&e, "NOGROUP") => {
                if let Some(con) = reader.as_mut() {
                    let _ = create_group(con, &me.keys).await;
                }
            }
            Err(e) => {
                me.metrics.errors("events").inc();
                tracing::debug!(error = %e, "reading webhook events failed; retrying");
                reader = None;
                drop(me);
                // Redis is unreachable: wait before the next attempt.
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

impl Inner {
    async fn read(&self, con: &mut MultiplexedConnection) -> redis::RedisResult<Vec<QueuedEvent>> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.keys.node)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(self.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(self.keys.events())
            .arg(">")
            .query_async(con)
            .await?;
        // [[stream, [entry, ...]]] or nil after the block.
        let entries = scripts::items(&reply)
            .and_then(|streams| streams.first())
            .and_then(scripts::items)
            .and_then(|stream| stream.get(1))
            .and_then(scripts::items)
            .unwrap_or_default();
        Ok(parse_entries(entries))
    }
}

impl EventQueue for RedisEvents {
    fn next(&self) -> PresenceFuture<QueuedEvent> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.shared.next().await) })
    }

    fn done(&self, key: &str) -> PresenceFuture<()> {
        let (done, answer) = oneshot::channel();
        let key = key.to_owned();
        let inner = self.inner.clone();
        // A stopped worker drops the command: answered below as unavailable.
        let _ = self.inner.commands.send(Command::Ack(key.clone(), done));
        Box::pin(async move {
            match answer.await {
                Ok(Ok(())) => Ok(()),
                outcome => {
                    // Not removed now: retried on a later heartbeat.
                    lock(&inner.shared.unacked).insert(key);
                    inner.metrics.errors("events").inc();
                    outcome.unwrap_or_else(|_| {
                        Err(PresenceError::Unavailable("redis presence stopped".into()))
                    })
                }
            }
        })
    }

    fn depth(&self) -> u64 {
        self.inner.shared.depth.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_entries_read_as_events() {
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(
                [
                    "id",
                    "e1-1",
                    "type",
                    "user.offline",
                    "ts",
                    "1764583200000",
                    "user_id",
                    "42",
                ]
                .into_iter()
                .map(bulk)
                .collect(),
            ),
        ]);
        let gone = Value::Array(vec![bulk("2-0"), Value::Nil]);
        let events = parse_entries(&[entry, gone]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key, "1-0");
        assert_eq!(
            events[0].event.to_json(),
            r#"{"id":"e1-1","type":"user.offline","timestamp":"2025-12-01T10:00:00.000Z","user_id":"42"}"#
        );
    }
}
