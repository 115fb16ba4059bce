//! The publisher link: one multiplexed connection that drains the outbox (bus
//! publishes and history scripts) in pipelined batches, in order. A batch that
//! fails is kept and sent again after the reconnect (the history scripts apply a
//! re-sent append once); each item handed over advances the count `flush` awaits.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use realtime::HistoryError;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError, Value};
use tokio::sync::{mpsc, watch};

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::bus::IDLE_CHECK;
use crate::history::script::{self, Loaded};
use crate::link::{self, Link};
use crate::metrics::{Flow, HistoryMetrics};
use crate::outbox::Outgoing;

/// Items per pipelined batch.
const PUBLISH_BATCH: usize = 256;

/// What the publisher task works with.
pub(crate) struct Publisher {
    pub(crate) client: Client,
    pub(crate) config: RedisConfig,
    pub(crate) link: Arc<Link>,
    pub(crate) flow: Flow,
    pub(crate) history: HistoryMetrics,
    /// PUBLISHes Redis answered with an error: sent nowhere.
    pub(crate) refused: Counter,
    pub(crate) published: Arc<watch::Sender<u64>>,
}

pub(crate) async fn run_publisher(publisher: Publisher, mut outbox: mpsc::Receiver<Outgoing>) {
    let Publisher {
        client,
        config,
        link,
        flow,
        history,
        refused,
        published,
    } = publisher;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut connection: Option<(MultiplexedConnection, Loaded)> = None;
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let (con, loaded) = match connection.as_mut() {
            Some(ready) => (&mut ready.0, &ready.1),
            None => match connect(&client, &config).await {
                Ok(ready) => {
                    link.mark_up();
                    backoff.reset();
                    let ready = connection.insert(ready);
                    (&mut ready.0, &ready.1)
                }
                Err(e) => {
                    link.mark_down(&e);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        if batch.is_empty() {
            tokio::select! {
                item = outbox.recv() => match item {
                    Some(item) => batch.push(item),
                    None => return,
                },
                () = tokio::time::sleep(IDLE_CHECK) => {
                    if let Err(e) = redis::cmd("PING").query_async::<String>(con).await {
                        link.mark_down(&e);
                        connection = None;
                    }
                    continue;
                }
            }
            while batch.len() < PUBLISH_BATCH {
                match outbox.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for item in &batch {
            match item {
                Outgoing::Publish {
                    channel, envelope, ..
                } => {
                    pipe.cmd("PUBLISH").arg(channel).arg(envelope.as_slice());
                }
                Outgoing::History { call, .. } => call.add_to(&mut pipe, loaded),
            }
        }
        let failure = match pipe
            .query_async::<Vec<redis::RedisResult<Value>>>(con)
            .await
        {
            Ok(replies) => {
                let (handed, failure) = settle(&mut batch, replies, &flow, &history, &refused);
                published.send_modify(|total| *total += handed);
                failure
            }
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            // Keep what is left: it goes out again, in order, after the reconnect.
            link.mark_down(&e);
            connection = None;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// A connection with the history scripts loaded.
async fn connect(
    client: &Client,
    config: &RedisConfig,
) -> redis::RedisResult<(MultiplexedConnection, Loaded)> {
    let mut con = link::connect(client, config.command_timeout).await?;
    let loaded = script::load(&mut con).await?;
    Ok((con, loaded))
}

/// Whether a reply means "not now" (the server is loading, busy, or lost its
/// scripts), so the item must be sent again after a reconnect, rather than
/// "never" (the item itself was refused).
fn must_retry(error: &RedisError) -> bool {
    match error.code() {
        Some(code) => matches!(
            code,
            "NOSCRIPT"
                | "LOADING"
                | "BUSY"
                | "MASTERDOWN"
                | "TRYAGAIN"
                | "READONLY"
                | "CLUSTERDOWN"
        ),
        None => true,
    }
}

/// Answers every item up to the first reply that must be retried, removes those
/// from `batch`, and returns how many were handed over and the retry's cause.
///
/// Only a lost script cache (NOSCRIPT after `SCRIPT FLUSH`) fails some commands
/// of a pipeline and not the rest; the later ones then run again on retry.
fn settle(
    batch: &mut Vec<Outgoing>,
    replies: Vec<redis::RedisResult<Value>>,
    flow: &Flow,
    history: &HistoryMetrics,
    refused: &Counter,
) -> (u64, Option<RedisError>) {
    let retry_at = replies
        .iter()
        .position(|reply| matches!(reply, Err(e) if must_retry(e)));
    let done = retry_at.unwrap_or(replies.len()).min(batch.len());
    let failure = match retry_at {
        Some(i) => replies[i].as_ref().err().cloned(),
        None if replies.len() < batch.len() => Some(RedisError::from((
            redis::ErrorKind::Client,
            "pipeline answered short",
        ))),
        None => None,
    };
    for (item, reply) in batch.drain(..done).zip(replies) {
        answer(item, reply, flow, history, refused);
    }
    (done as u64, failure)
}

fn answer(
    item: Outgoing,
    reply: redis::RedisResult<Value>,
    flow: &Flow,
    history: &HistoryMetrics,
    refused: &Counter,
) {
    flow.passed(item.size());
    match item {
        Outgoing::Publish {
            channel, counted, ..
        } => match reply {
            Ok(Value::Int(receivers)) => {
                if let Some(tx) = counted {
                    let _ = tx.send(receivers.max(0) as usize);
                }
            }
            // The waiting sender, if any, learns it failed when `counted` drops;
            // one that did not wait was told it was relayed: counted here.
            Ok(other) => {
                refused.inc();
                tracing::warn!(%channel, reply = ?other, "unexpected PUBLISH reply");
            }
            Err(error) => {
                refused.inc();
                tracing::warn!(%channel, %error, "redis refused a PUBLISH");
            }
        },
        Outgoing::History { call, done } => {
            let op = call.op();
            let position = reply
                .map_err(|e| e.to_string())
                .and_then(|value| script::position(&value).map_err(|e| e.to_string()));
            match &position {
                Ok(_) if op == "append" => {
                    history.appends.inc();
                }
                Ok(_) => {
                    history.resets.inc();
                }
                Err(error) => {
                    history.errors(op).inc();
                    tracing::warn!(op, %error, "redis history script failed");
                }
            }
            let _ = done.send(
                position.map_err(|e| HistoryError::Unavailable(format!("redis history: {e}"))),
            );
        }
    }
}
