//! One client of the recovery storm: subscribes to the history topic (with `since`
//! on a reconnect), follows its position through every delivery, and when told
//! drops its socket without a close frame, as a client losing its network would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::http::Position;
use super::tally::OffsetTally;
use crate::client::{self, ConnSpec, HANDSHAKE, Socket};
use crate::tracker::Tracker;

/// What every client shares with the scenario while it runs: the last offset
/// each has, so the scenario sees when all caught up without stopping them.
pub struct Shared {
    pub offsets: Vec<AtomicU64>,
    /// Topic messages received by all clients.
    pub delivered: AtomicU64,
    /// Clients whose subscribe was answered or failed.
    pub settled: AtomicUsize,
}

impl Shared {
    pub fn new(clients: usize) -> Arc<Shared> {
        Arc::new(Shared {
            offsets: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            settled: AtomicUsize::new(0),
        })
    }

    /// Clients whose last offset is at least `offset`.
    pub fn at_least(&self, offset: u64) -> usize {
        self.offsets
            .iter()
            .filter(|o| o.load(Ordering::Relaxed) >= offset)
            .count()
    }

    /// Marks client `index` as never going to progress (it failed), so waits for
    /// the others do not wait for it.
    fn give_up(&self, index: usize) {
        self.offsets[index].store(u64::MAX, Ordering::Relaxed);
    }
}

/// The `subscribed` answer to a subscribe with `since`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Subscribed {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    pub recovered: Option<bool>,
    pub reason: Option<String>,
}

impl Subscribed {
    fn position(&self) -> Option<Position> {
        Some(Position {
            offset: self.offset?,
            epoch: self.epoch.clone()?,
        })
    }
}

/// The fields of any server frame the storm looks at (the rest is skipped).
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    offset: Option<u64>,
    epoch: Option<String>,
    recovered: Option<bool>,
    reason: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// One storm client and everything it saw, across both of its connections.
pub struct Client {
    pub index: usize,
    spec: ConnSpec,
    topic: String,
    /// Exactly-once by sequence number, across both connections.
    pub seqs: Tracker,
    /// In order by offset, across both connections.
    pub offsets: OffsetTally,
    /// Topic messages that came without an offset or epoch.
    pub unpositioned: u64,
    /// The position `since` carried on the reconnect.
    pub since: Option<Position>,
    /// The reconnect's `subscribed` answer.
    pub answer: Option<Subscribed>,
    /// From the start of the reconnect to holding the catch-up target.
    pub catch_up: Option<Duration>,
    /// From the start of the reconnect to the `subscribed` answer (connect,
    /// upgrade, JWT check, subscribe and the history read behind it).
    pub answered: Option<Duration>,
    /// Topic messages received on the reconnected connection.
    pub delivered_after_reconnect: u64,
    pub missed_notices: u64,
    pub error: Option<String>,
}

/// Until when a connection is followed, and what counts as caught up.
pub struct Follow {
    pub stop: watch::Receiver<bool>,
    /// The offset that ends the catch-up, and when the catch-up started.
    pub catch_up: Option<(u64, Instant)>,
}

impl Client {
    pub fn new(index: usize, spec: ConnSpec, topic: &str) -> Client {
        Client {
            index,
            spec,
            topic: topic.to_owned(),
            seqs: Tracker::new(0),
            offsets: OffsetTally::default(),
            unpositioned: 0,
            since: None,
            answer: None,
            catch_up: None,
            answered: None,
            delivered_after_reconnect: 0,
            missed_notices: 0,
            error: None,
        }
    }

    /// Connects and subscribes: the first time from the current position, on a
    /// reconnect with `since` = the last position delivered.
    pub async fn join(&mut self, shared: &Shared, reconnect: bool) -> anyhow::Result<Socket> {
        let result = tokio::time::timeout(HANDSHAKE, self.join_inner(shared, reconnect))
            .await
            .context("connect and subscribe timed out")
            .and_then(|r| r);
        if let Err(e) = &result {
            self.error.get_or_insert_with(|| format!("{e:#}"));
            shared.give_up(self.index);
        }
        shared.settled.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn join_inner(&mut self, shared: &Shared, reconnect: bool) -> anyhow::Result<Socket> {
        let mut ws = client::connect(&self.spec).await?;
        let since = reconnect
            .then(|| self.offsets.position().cloned())
            .flatten();
        if reconnect {
            self.since = since.clone();
        }
        let command = match &since {
            Some(p) => serde_json::json!({"action": "subscribe", "topic": self.topic,
                "since": {"offset": p.offset, "epoch": p.epoch}, "ref": "s"}),
            None => serde_json::json!({"action": "subscribe", "topic": self.topic, "ref": "s"}),
        };
        ws.send(Message::text(command.to_string())).await?;
        let answer = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Some(answer) = self.handle(&text, shared, reconnect)? {
                        break answer;
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("closed before subscribed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("connection ended before subscribed"),
            }
        };
        match (&since, answer.recovered) {
            // Every publication after `since` follows: the tally goes on from it.
            (Some(_), Some(true)) => {}
            // Not recovered, or a first subscribe: delivery goes on from the
            // position the server answered.
            _ => {
                let Some(position) = answer.position() else {
                    bail!("`subscribed` on a history topic carries no offset and epoch");
                };
                self.offsets.resume_at(position);
            }
        }
        shared.offsets[self.index].store(self.offsets.offset(), Ordering::Relaxed);
        if reconnect {
            self.answer = Some(answer);
        }
        Ok(ws)
    }

    /// Receives until told to stop, then drops the socket without a close frame.
    pub async fn follow(&mut self, mut ws: Socket, shared: &Shared, mut follow: Follow) {
        let reconnected = follow.catch_up.is_some();
        self.check_caught_up(&follow);
        loop {
            let msg = tokio::select! {
                biased;
                _ = follow.stop.wait_for(|s| *s) => break,
                msg = ws.next() => msg,
            };
            match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Err(e) = self.handle(&text, shared, reconnected) {
                        self.error.get_or_insert_with(|| format!("{e:#}"));
                        break;
                    }
                    shared.offsets[self.index].store(self.offsets.offset(), Ordering::Relaxed);
                    self.check_caught_up(&follow);
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    self.error
                        .get_or_insert_with(|| format!("closed by the server ({code})"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.error
                        .get_or_insert_with(|| format!("connection failed: {e}"));
                    break;
                }
                None => {
                    self.error
                        .get_or_insert_with(|| "connection ended".to_owned());
                    break;
                }
            }
        }
        if self.error.is_some() {
            shared.give_up(self.index);
        }
        drop(ws);
    }

    fn check_caught_up(&mut self, follow: &Follow) {
        if let Some((target, start)) = follow.catch_up
            && self.catch_up.is_none()
            && self.offsets.offset() >= target
        {
            self.catch_up = Some(start.elapsed());
        }
    }

    /// Accounts for one frame; `Some` when it is the `subscribed` answer.
    fn handle(
        &mut self,
        text: &str,
        shared: &Shared,
        reconnected: bool,
    ) -> anyhow::Result<Option<Subscribed>> {
        let frame: Frame = serde_json::from_str(text)
            .with_context(|| format!("a frame that is not JSON: {text:.80}"))?;
        match frame.kind.as_str() {
            "subscribed" => {
                return Ok(Some(Subscribed {
                    offset: frame.offset,
                    epoch: frame.epoch,
                    recovered: frame.recovered,
                    reason: frame.reason,
                }));
            }
            "missed" => {
                self.missed_notices += 1;
                if let (Some(offset), Some(epoch)) = (frame.offset, frame.epoch) {
                    self.offsets.resume_at(Position { offset, epoch });
                }
            }
            "error" => bail!(
                "server error {}: {}",
                frame.code.unwrap_or_default(),
                frame.message.unwrap_or_default()
            ),
            _ => {
                if self.seqs.record(text, false) {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    if reconnected {
                        self.delivered_after_reconnect += 1;
                    }
                    match (frame.offset, frame.epoch) {
                        (Some(offset), Some(epoch)) => self.offsets.record(offset, &epoch),
                        _ => self.unpositioned += 1,
                    }
                }
            }
        }
        Ok(None)
    }
}
