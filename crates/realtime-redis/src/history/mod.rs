//! [`RedisHistory`]: the history store over Redis streams. A topic's history is a
//! STREAM of its publications (entry id `<offset>-0`) beside a HASH with its epoch
//! and top offset; the Lua scripts in `lua/` change both and publish in one
//! atomic step. Appends and resets go through the bus's ordered outbox; reads use
//! a connection of their own.

mod reads;
pub(crate) mod script;

use std::sync::Arc;

use realtime::cluster::bus::Inbox;
use realtime::history::{
    AppendRequest, HistoryError, HistoryStore, PageFuture, PositionFuture, ReadRequest,
};
use realtime::realtime_core::{HistoryLimits, Topic};
use redis::Client;
use tokio::sync::oneshot;

use crate::RedisConfig;
use crate::link::Link;
use crate::metrics::HistoryMetrics;
use crate::outbox::{Outbox, Outgoing};
use reads::Reads;
use script::{Keys, ScriptCall};

/// Topic history in Redis, shared by every node on the same Redis and prefix.
/// Create it with [`crate::RedisCluster`]; it needs the cluster's bus started
/// (by the engine), whose publisher carries its appends.
pub struct RedisHistory {
    keys: Keys,
    outbox: Arc<Outbox>,
    publisher: Arc<Link>,
    reads: Arc<Reads>,
    metrics: HistoryMetrics,
}

impl RedisHistory {
    pub(crate) fn new(
        client: Client,
        config: &RedisConfig,
        outbox: Arc<Outbox>,
        publisher: Arc<Link>,
        metrics: HistoryMetrics,
    ) -> Self {
        RedisHistory {
            keys: Keys::new(&config.prefix),
            outbox,
            publisher,
            reads: Arc::new(Reads::new(client, config.command_timeout)),
            metrics,
        }
    }

    /// Queues a script for the publisher, in order with the bus's publishes.
    /// Taken at once (the caller may drop the future) or refused at once.
    fn submit(&self, call: ScriptCall, op: &'static str, epoch: &str) -> PositionFuture {
        let refuse = |reason: String| -> PositionFuture {
            self.metrics.errors(op).inc();
            Box::pin(async move { Err(HistoryError::Unavailable(reason)) })
        };
        if !usable_epoch(epoch) {
            return refuse(format!("unusable epoch {epoch:?}"));
        }
        if !self.publisher.is_up() {
            return refuse(self.publisher.reason());
        }
        let (done, answer) = oneshot::channel();
        if let Err(refused) = self.outbox.enqueue(Outgoing::History { call, done }) {
            return refuse(refused.0.to_owned());
        }
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(HistoryError::Unavailable("redis publisher stopped".into()))
            })
        })
    }
}

impl HistoryStore for RedisHistory {
    fn start(&self, _inbox: Inbox) {
        // Publications arrive on the bus's subscriber, like every envelope.
    }

    fn append(&self, request: AppendRequest) -> PositionFuture {
        let call = ScriptCall::append(&self.keys, &request);
        self.submit(call, "append", &request.new_epoch)
    }

    fn read(&self, request: ReadRequest) -> PageFuture {
        let call = ScriptCall::read(&self.keys, &request);
        let (reads, metrics) = (self.reads.clone(), self.metrics.clone());
        let usable = usable_epoch(&request.new_epoch);
        Box::pin(async move {
            if !usable {
                metrics.errors("read").inc();
                return Err(HistoryError::Unavailable(format!(
                    "unusable epoch {:?}",
                    request.new_epoch
                )));
            }
            let page = reads
                .run(&call)
                .await
                .and_then(|reply| script::page(&reply).map_err(|e| e.to_string()));
            match page {
                Ok(page) => {
                    metrics.reads.inc();
                    Ok(page)
                }
                Err(reason) => {
                    metrics.errors("read").inc();
                    Err(HistoryError::Unavailable(format!(
                        "redis history: {reason}"
                    )))
                }
            }
        })
    }

    fn reset(&self, topic: &Topic, limits: HistoryLimits, new_epoch: String) -> PositionFuture {
        let epoch = new_epoch.clone();
        self.submit(
            ScriptCall::reset(&self.keys, topic, limits, new_epoch),
            "reset",
            &epoch,
        )
    }
}

/// An epoch travels in the wire publication between spaces: it must have
/// something in it and no whitespace, or no node could decode what it carries.
fn usable_epoch(epoch: &str) -> bool {
    !epoch.is_empty() && !epoch.bytes().any(|b| b.is_ascii_whitespace())
}
