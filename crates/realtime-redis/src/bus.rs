//! [`RedisBus`]: the message bus over Redis pub/sub.
//!
//! Two links, each with its own task: the subscriber (one pub/sub connection that
//! holds exactly the channels the engine asked for and hands every message to the
//! engine's inbox) and the publisher (one multiplexed connection that drains the
//! outbox in pipelined batches, in order). A batch that fails is kept and
//! published again after the reconnect, so a Redis blip delays envelopes instead
//! of losing them; receivers drop the rare duplicate by sequence number.
//!
//! Both directions are bounded in envelopes and bytes. Outbound, a send beyond
//! the bound fails at once. Inbound, the Redis client reads its socket without
//! pause, so the subscriber moves what it reads into the bounded [`Inbound`]
//! hand-off at once; a node whose engine falls behind it drops the link, counts
//! what it discarded, and resubscribes once it has caught up.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use realtime::cluster::bus::{BusError, BusFuture, BusStatus, CountFuture, Inbox, MessageBus};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{Client, Msg};
use tokio::sync::{mpsc, oneshot, watch};

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::inbound::Inbound;
use crate::link::{self, Link};
use crate::metrics::{BusMetrics, Flow};

/// Channels per SUBSCRIBE command when restoring a large set.
const SUBSCRIBE_CHUNK: usize = 1000;
/// Envelopes per pipelined publish.
const PUBLISH_BATCH: usize = 256;
/// A link with no traffic is checked this often, so an outage shows in `/health`.
const IDLE_CHECK: Duration = Duration::from_secs(1);

struct InterestChange {
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
    done: oneshot::Sender<Result<(), BusError>>,
}

/// An envelope for a channel, and where to report how many nodes received it.
type Outgoing = (String, Vec<u8>, Option<oneshot::Sender<usize>>);

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
    outbox: mpsc::Sender<Outgoing>,
    /// Envelopes ever queued for the publisher; held while queueing, so the count
    /// matches the queue's order.
    queued: Mutex<u64>,
    /// Envelopes ever handed to Redis, in queue order (for [`MessageBus::flush`]).
    published: Arc<watch::Sender<u64>>,
    receivers: Mutex<
        Option<(
            mpsc::UnboundedReceiver<InterestChange>,
            mpsc::Receiver<Outgoing>,
        )>,
    >,
}

impl RedisBus {
    pub(crate) fn new(client: Client, config: RedisConfig) -> Self {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (outbox, outbox_rx) = mpsc::channel(config.outbox_capacity.max(1));
        let metrics = BusMetrics::new();
        RedisBus {
            client,
            config,
            subscriber: Arc::new(Link::with_gauges("subscriber", metrics.link("subscriber"))),
            publisher: Arc::new(Link::with_gauges("publisher", metrics.link("publisher"))),
            metrics,
            desired: Arc::new(Mutex::new(HashSet::new())),
            changes,
            outbox,
            queued: Mutex::new(0),
            published: Arc::new(watch::Sender::new(0)),
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
    /// Queues an envelope for the publisher, or refuses it at once when the queue
    /// is at its bound in envelopes or bytes. An empty queue takes any envelope.
    fn enqueue(&self, item: Outgoing) -> Result<(), BusError> {
        let size = item.1.len();
        let backlog = &self.metrics.outbound;
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = backlog.backlog_bytes.get().max(0) as usize;
        if waiting > 0 && waiting + size > self.config.outbox_bytes {
            return Err(BusError::Unavailable(
                "redis publisher backlog is full (bytes)".into(),
            ));
        }
        // Counted before it is visible to the publisher, which uncounts it.
        backlog.queued(size);
        match self.outbox.try_send(item) {
            Ok(()) => {
                *queued += 1;
                Ok(())
            }
            Err(e) => {
                backlog.backlog_envelopes.dec();
                backlog.backlog_bytes.dec_by(size as i64);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => {
                        BusError::Unavailable("redis publisher backlog is full".into())
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        BusError::Unavailable("redis publisher stopped".into())
                    }
                })
            }
        }
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
                published: self.published.clone(),
            },
            outbox,
        ));
    }

    fn publish(&self, channel: String, envelope: Vec<u8>) -> Result<(), BusError> {
        self.enqueue((channel, envelope, None))
    }

    fn publish_counted(&self, channel: String, envelope: Vec<u8>) -> CountFuture {
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue((channel, envelope, Some(tx)));
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
        let target = *self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut published = self.published.subscribe();
        Box::pin(async move {
            published
                .wait_for(|n| *n >= target)
                .await
                .map(|_| ())
                .map_err(|_| BusError::Unavailable("redis publisher stopped".into()))
        })
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }
}

/// What the subscriber task works with.
struct Subscriber {
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    desired: Arc<Mutex<HashSet<String>>>,
    inbound: Arc<Inbound>,
    dropped: Counter,
}

/// Why a subscriber connection's reader stopped.
enum ReadEnd {
    /// The connection ended; everything it carried was queued.
    Closed,
    /// Asked to stop; everything already read was queued.
    Stopped,
    /// The inbound backlog was full: this many received envelopes were discarded.
    Behind(u64),
}

async fn run_subscriber(sub: Subscriber, mut changes: mpsc::UnboundedReceiver<InterestChange>) {
    let config = &sub.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let timeout = config.command_timeout;
    loop {
        let pubsub = match tokio::time::timeout(timeout, sub.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                sub.link.mark_down(&e);
                if !wait_refusing(&mut changes, sleep(backoff.next_delay()), &sub.link).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                sub.link.mark_down(&"connect timed out");
                if !wait_refusing(&mut changes, sleep(backoff.next_delay()), &sub.link).await {
                    return;
                }
                continue;
            }
        };
        let (mut sink, stream) = pubsub.split();
        // Reading starts before the first SUBSCRIBE, so nothing piles up unbounded
        // in the client while a large set is restored.
        let (stop, stopped) = oneshot::channel();
        let mut reader = Some(tokio::spawn(read_link(
            stream,
            sub.inbound.clone(),
            stopped,
        )));
        let failure = match restore(&mut sink, &sub.desired, timeout).await {
            Err(e) => e,
            Ok(()) => {
                sub.link.mark_up();
                backoff.reset();
                match serve_link(&mut sink, &mut changes, &mut reader, timeout).await {
                    Some(failure) => failure,
                    None => {
                        // The engine is gone: close the connection with it.
                        if let Some(reader) = reader {
                            reader.abort();
                        }
                        return;
                    }
                }
            }
        };
        // Whatever the link already read reaches the inbox before it is declared
        // down: the reader queues it all before it returns.
        let end = match reader.take() {
            Some(reader) => {
                let _ = stop.send(());
                reader.await.unwrap_or(ReadEnd::Stopped)
            }
            None => failure.end,
        };
        let behind = match end {
            ReadEnd::Behind(n) => {
                sub.dropped.inc_by(n);
                tracing::warn!(
                    dropped = n,
                    "redis subscriber fell behind: inbound backlog full, envelopes discarded; resubscribing once caught up"
                );
                true
            }
            ReadEnd::Closed | ReadEnd::Stopped => false,
        };
        sub.link.mark_down(&failure.reason);
        if behind {
            // Resubscribing into a full backlog would only discard again.
            if !wait_refusing(&mut changes, sub.inbound.drained(), &sub.link).await {
                return;
            }
        }
        if !wait_refusing(&mut changes, sleep(backoff.next_delay()), &sub.link).await {
            return;
        }
    }
}

/// Why a connected subscriber link failed.
struct Failure {
    reason: String,
    /// How the reader ended, if it ended first.
    end: ReadEnd,
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure {
            reason,
            end: ReadEnd::Stopped,
        }
    }
}

async fn restore(
    sink: &mut PubSubSink,
    desired: &Mutex<HashSet<String>>,
    timeout: Duration,
) -> Result<(), Failure> {
    let channels: Vec<String> = desired
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
        with_timeout(timeout, sink.subscribe(chunk)).await?;
    }
    Ok(())
}

/// Applies interest changes and checks the link until it fails. `None` when the
/// engine is gone.
async fn serve_link(
    sink: &mut PubSubSink,
    changes: &mut mpsc::UnboundedReceiver<InterestChange>,
    reader: &mut Option<tokio::task::JoinHandle<ReadEnd>>,
    timeout: Duration,
) -> Option<Failure> {
    let mut idle = tokio::time::interval(IDLE_CHECK);
    idle.tick().await;
    let Some(running) = reader.as_mut() else {
        return Some("reader stopped".to_string().into());
    };
    let failure = loop {
        tokio::select! {
            end = &mut *running => {
                let end = end.unwrap_or(ReadEnd::Closed);
                let reason = match &end {
                    ReadEnd::Behind(n) => format!("fell behind: inbound backlog full, {n} envelopes discarded"),
                    ReadEnd::Closed | ReadEnd::Stopped => "connection closed".to_string(),
                };
                *reader = None;
                break Failure { reason, end };
            }
            change = changes.recv() => {
                let change = change?;
                match apply(sink, &change, timeout).await {
                    Ok(()) => { let _ = change.done.send(Ok(())); }
                    Err(e) => {
                        let _ = change.done.send(Err(BusError::Unavailable(format!("redis subscriber: {e}"))));
                        break e.into();
                    }
                }
            }
            _ = idle.tick() => {
                if let Err(e) = with_timeout(timeout, sink.ping::<redis::Value>()).await {
                    break e.into();
                }
            }
        }
    };
    Some(failure)
}

/// Moves every message the client reads into the inbound hand-off, until the
/// connection ends, the hand-off is full, or `stop` fires.
async fn read_link(
    mut stream: PubSubStream,
    inbound: Arc<Inbound>,
    mut stop: oneshot::Receiver<()>,
) -> ReadEnd {
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => {
                    if inbound.push(msg).is_err() {
                        return ReadEnd::Behind(1 + take_ready(&mut stream, |_| false).await);
                    }
                }
                None => return ReadEnd::Closed,
            },
            _ = &mut stop => {
                let mut full = false;
                let discarded = take_ready(&mut stream, |msg| {
                    full = full || inbound.push(msg).is_err();
                    !full
                })
                .await;
                return if full { ReadEnd::Behind(discarded) } else { ReadEnd::Stopped };
            }
        }
    }
}

/// Takes every message the client has already read, without waiting for more,
/// and offers each to `keep`; returns how many it refused. Unconstrained by the
/// scheduler's budget, which would otherwise end the drain early.
async fn take_ready(stream: &mut PubSubStream, mut keep: impl FnMut(Msg) -> bool) -> u64 {
    tokio::task::unconstrained(async {
        let mut refused = 0;
        while let Some(Some(msg)) = stream.next().now_or_never() {
            if !keep(msg) {
                refused += 1;
            }
        }
        refused
    })
    .await
}

fn sleep(delay: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(delay)
}

async fn apply(
    sink: &mut PubSubSink,
    change: &InterestChange,
    timeout: Duration,
) -> Result<(), String> {
    for chunk in change.subscribe.chunks(SUBSCRIBE_CHUNK) {
        with_timeout(timeout, sink.subscribe(chunk)).await?;
    }
    for chunk in change.unsubscribe.chunks(SUBSCRIBE_CHUNK) {
        with_timeout(timeout, sink.unsubscribe(chunk)).await?;
    }
    Ok(())
}

/// Waits for `until` while answering interest changes with "unavailable" (they
/// are already recorded and will be applied on reconnect). Returns false if the
/// engine is gone.
async fn wait_refusing(
    changes: &mut mpsc::UnboundedReceiver<InterestChange>,
    until: impl std::future::Future<Output = ()>,
    link: &Link,
) -> bool {
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => return true,
            change = changes.recv() => match change {
                Some(change) => { let _ = change.done.send(Err(BusError::Unavailable(link.reason()))); }
                None => return false,
            },
        }
    }
}

/// What the publisher task works with.
struct Publisher {
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    flow: Flow,
    published: Arc<watch::Sender<u64>>,
}

async fn run_publisher(publisher: Publisher, mut outbox: mpsc::Receiver<Outgoing>) {
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

async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("command timed out".into()),
    }
}
