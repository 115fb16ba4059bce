//! [`RedisBus`]: the message bus over Redis pub/sub.
//!
//! Two links, each with its own task: the subscriber (`subscriber.rs`: one pub/sub
//! connection that holds exactly the channels the engine asked for and hands every
//! message to the engine's inbox) and the publisher (`publisher.rs`: one
//! multiplexed connection that drains the outbox (`outbox.rs`, shared with the
//! history store's appends) in pipelined batches, in order). A batch that fails
//! is kept and published again after the reconnect, so a Redis blip delays
//! envelopes instead of losing them; receivers drop the rare duplicate by
//! sequence number.
//!
//! Both directions are bounded in envelopes and bytes. Outbound, a send beyond
//! the bound fails at once. Inbound, the Redis client reads its socket without
//! pause, so the subscriber moves what it reads into the bounded [`Inbound`]
//! hand-off at once; a node whose engine falls behind it drops the link, counts
//! what it discarded, and resubscribes once it has caught up.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realtime::cluster::bus::{BusError, BusFuture, BusStatus, CountFuture, Inbox, MessageBus};
use redis::Client;
use tokio::sync::{mpsc, oneshot};

use crate::RedisConfig;
use crate::inbound::Inbound;
use crate::link::Link;
use crate::metrics::BusMetrics;
use crate::outbox::{Outbox, Outgoing};
use crate::publisher::{Publisher, run_publisher};
use crate::subscriber::{Subscriber, run_subscriber};

/// A link with no traffic is checked this often, so an outage shows in `/health`.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Channels to subscribe and unsubscribe, and where to report once active.
pub(crate) struct InterestChange {
    pub(crate) subscribe: Vec<String>,
    pub(crate) unsubscribe: Vec<String>,
    pub(crate) done: oneshot::Sender<Result<(), BusError>>,
}

/// One of the bus's two Redis links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusLink {
    /// Receives: the pub/sub connection.
    Subscriber,
    /// Sends: publishes and history appends.
    Publisher,
}

/// The message bus over Redis pub/sub. Create it with [`crate::RedisCluster`].
pub struct RedisBus {
    client: Client,
    config: RedisConfig,
    subscriber: Arc<Link>,
    publisher: Arc<Link>,
    metrics: BusMetrics,
    /// Every channel the engine wants, re-subscribed after each reconnect.
    desired: Arc<Mutex<HashSet<String>>>,
    changes: mpsc::UnboundedSender<InterestChange>,
    /// Shared with the history store, whose appends go out in the same order.
    outbox: Arc<Outbox>,
    receivers: Mutex<
        Option<(
            mpsc::UnboundedReceiver<InterestChange>,
            mpsc::Receiver<Outgoing>,
        )>,
    >,
}

impl RedisBus {
    /// `metrics` is shared with the directory, whose link reports in it too.
    pub(crate) fn new(client: Client, config: RedisConfig, metrics: BusMetrics) -> Self {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (outbox, outbox_rx) = Outbox::new(&config, metrics.outbound.clone());
        RedisBus {
            client,
            config,
            subscriber: Arc::new(Link::with_gauges("subscriber", metrics.link("subscriber"))),
            publisher: Arc::new(Link::with_gauges("publisher", metrics.link("publisher"))),
            metrics,
            desired: Arc::new(Mutex::new(HashSet::new())),
            changes,
            outbox: Arc::new(outbox),
            receivers: Mutex::new(Some((changes_rx, outbox_rx))),
        }
    }

    /// Waits (up to `timeout`) until both links are up.
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        let (mut sub, mut publ) = (self.subscriber.watch(), self.publisher.watch());
        tokio::time::timeout(timeout, async {
            let _ = sub.wait_for(|up| *up).await;
            let _ = publ.wait_for(|up| *up).await;
        })
        .await
        .is_ok()
            && self.subscriber.is_up()
            && self.publisher.is_up()
    }

    /// Waits (up to `timeout`) until `link` is up (`up`) or down. Returns whether
    /// it is.
    pub async fn wait_for(&self, link: BusLink, up: bool, timeout: Duration) -> bool {
        let link = match link {
            BusLink::Subscriber => &self.subscriber,
            BusLink::Publisher => &self.publisher,
        };
        let mut state = link.watch();
        let _ = tokio::time::timeout(timeout, state.wait_for(|now| *now == up)).await;
        link.is_up() == up
    }

    /// Waits (up to `timeout`) until a link is down. Returns whether one is.
    pub async fn wait_until_down(&self, timeout: Duration) -> bool {
        let (mut sub, mut publ) = (self.subscriber.watch(), self.publisher.watch());
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = sub.wait_for(|up| !*up) => {}
                _ = publ.wait_for(|up| !*up) => {}
            }
        })
        .await;
        !(self.subscriber.is_up() && self.publisher.is_up())
    }
}

impl RedisBus {
    pub(crate) fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    pub(crate) fn publisher_link(&self) -> Arc<Link> {
        self.publisher.clone()
    }

    fn enqueue(&self, item: Outgoing) -> Result<(), BusError> {
        self.outbox
            .enqueue(item)
            .map_err(|refused| BusError::Unavailable(refused.0.into()))
    }
}

impl MessageBus for RedisBus {
    fn start(&self, inbox: Inbox, always: Vec<String>) {
        // Taking the receivers makes the first call the only one that starts tasks.
        let Some((changes, outbox)) = self
            .receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        self.desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(always);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.subscriber
                .mark_down(&"the bus must be started inside a tokio runtime");
            return;
        };
        let inbound = Inbound::start(
            &runtime,
            inbox,
            self.metrics.inbound.clone(),
            self.config.inbox_capacity,
            self.config.inbox_bytes,
        );
        runtime.spawn(run_subscriber(
            Subscriber {
                client: self.client.clone(),
                config: self.config.clone(),
                link: self.subscriber.clone(),
                desired: self.desired.clone(),
                inbound: Arc::new(inbound),
                dropped: self.metrics.dropped_behind.clone(),
            },
            changes,
        ));
        runtime.spawn(run_publisher(
            Publisher {
                client: self.client.clone(),
                config: self.config.clone(),
                link: self.publisher.clone(),
                flow: self.metrics.outbound.clone(),
                history: self.metrics.history.clone(),
                refused: self.metrics.dropped_refused.clone(),
                published: self.outbox.published(),
            },
            outbox,
        ));
    }

    fn publish(&self, channel: String, envelope: Vec<u8>) -> Result<(), BusError> {
        self.enqueue(Outgoing::Publish {
            channel,
            envelope,
            counted: None,
        })
    }

    fn publish_counted(&self, channel: String, envelope: Vec<u8>) -> CountFuture {
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(Outgoing::Publish {
            channel,
            envelope,
            counted: Some(tx),
        });
        Box::pin(async move {
            queued?;
            rx.await
                .map_err(|_| BusError::Unavailable("redis publisher stopped".into()))
        })
    }

    fn update_interest(&self, subscribe: Vec<String>, unsubscribe: Vec<String>) -> BusFuture {
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let (done, result) = oneshot::channel();
        {
            // Recorded first, so a reconnect restores it even if the command fails.
            let mut desired = self.desired.lock().unwrap_or_else(|p| p.into_inner());
            for c in &unsubscribe {
                desired.remove(c);
            }
            desired.extend(subscribe.iter().cloned());
            let _ = self.changes.send(InterestChange {
                subscribe,
                unsubscribe,
                done,
            });
        }
        Box::pin(async move {
            result
                .await
                .unwrap_or_else(|_| Err(BusError::Unavailable("redis subscriber stopped".into())))
        })
    }

    fn status(&self) -> BusStatus {
        for link in [&self.subscriber, &self.publisher] {
            if !link.is_up() {
                return BusStatus::Down {
                    reason: link.reason(),
                };
            }
        }
        BusStatus::Up
    }

    fn flush(&self) -> BusFuture {
        let flushed = self.outbox.flush();
        Box::pin(async move {
            flushed
                .await
                .map_err(|()| BusError::Unavailable("redis publisher stopped".into()))
        })
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }
}
