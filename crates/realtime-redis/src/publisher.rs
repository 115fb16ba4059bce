//! The publisher link: one multiplexed connection that drains the outbox in
//! pipelined batches, in order. A batch that fails is kept and published again
//! after the reconnect; each published batch advances the count `flush` awaits.

use std::sync::Arc;

use redis::Client;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::bus::{IDLE_CHECK, Outgoing};
use crate::link::{self, Link};
use crate::metrics::Flow;

/// Envelopes per pipelined publish.
const PUBLISH_BATCH: usize = 256;

/// What the publisher task works with.
pub(crate) struct Publisher {
    pub(crate) client: Client,
    pub(crate) config: RedisConfig,
    pub(crate) link: Arc<Link>,
    pub(crate) flow: Flow,
    pub(crate) published: Arc<watch::Sender<u64>>,
}

pub(crate) async fn run_publisher(publisher: Publisher, mut outbox: mpsc::Receiver<Outgoing>) {
    let Publisher {
        client,
        config,
        link,
        flow,
        published,
    } = publisher;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut connection: Option<MultiplexedConnection> = None;
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let con = match connection.as_mut() {
            Some(con) => con,
            None => match link::connect(&client, config.command_timeout).await {
                Ok(con) => {
                    link.mark_up();
                    backoff.reset();
                    connection.insert(con)
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
        for (channel, envelope, _) in &batch {
            pipe.cmd("PUBLISH").arg(channel).arg(envelope.as_slice());
        }
        match pipe.query_async::<Vec<usize>>(con).await {
            Ok(receivers) => {
                let handed = batch.len() as u64;
                for ((_, envelope, counted), n) in batch.drain(..).zip(receivers) {
                    flow.passed(envelope.len());
                    if let Some(tx) = counted {
                        let _ = tx.send(n);
                    }
                }
                published.send_modify(|total| *total += handed);
            }
            Err(e) => {
                // Keep the batch: it goes out again, in order, after the reconnect.
                link.mark_down(&e);
                connection = None;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
