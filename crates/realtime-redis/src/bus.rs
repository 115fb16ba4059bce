//! [`RedisBus`]: the message bus over Redis pub/sub.
//!
//! Two links, each with its own task: the subscriber (one pub/sub connection that
//! holds exactly the channels the engine asked for and hands every message to the
//! engine's inbox) and the publisher (one multiplexed connection that drains the
//! outbox in pipelined batches, in order). A batch that fails is kept and
//! published again after the reconnect, so a Redis blip delays envelopes instead
//! of losing them; receivers drop the rare duplicate by sequence number.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use realtime::cluster::bus::{BusError, BusFuture, BusStatus, CountFuture, Inbox, MessageBus};
use redis::Client;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::{mpsc, oneshot};

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::link::{self, Link};

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
    /// Every channel the engine wants, re-subscribed after each reconnect.
    desired: Arc<Mutex<HashSet<String>>>,
    changes: mpsc::UnboundedSender<InterestChange>,
    outbox: mpsc::Sender<Outgoing>,
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
        RedisBus {
            client,
            config,
            subscriber: Arc::new(Link::new("subscriber")),
            publisher: Arc::new(Link::new("publisher")),
            desired: Arc::new(Mutex::new(HashSet::new())),
            changes,
            outbox,
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
}

impl RedisBus {
    fn enqueue(&self, item: Outgoing) -> Result<(), BusError> {
        self.outbox.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                BusError::Unavailable("redis publisher backlog is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                BusError::Unavailable("redis publisher stopped".into())
            }
        })
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
        runtime.spawn(run_subscriber(
            self.client.clone(),
            self.config.clone(),
            self.subscriber.clone(),
            self.desired.clone(),
            changes,
            inbox,
        ));
        runtime.spawn(run_publisher(
            self.client.clone(),
            self.config.clone(),
            self.publisher.clone(),
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
}

async fn run_subscriber(
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    desired: Arc<Mutex<HashSet<String>>>,
    mut changes: mpsc::UnboundedReceiver<InterestChange>,
    inbox: Inbox,
) {
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let timeout = config.command_timeout;
    loop {
        let connected = async {
            let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = pubsub.split();
            let channels: Vec<String> = desired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
                with_timeout(timeout, sink.subscribe(chunk)).await?;
            }
            Ok::<_, String>((sink, stream))
        }
        .await;
        let (mut sink, mut stream) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                link.mark_down(&e);
                if !wait_refusing(&mut changes, backoff.next_delay(), &link).await {
                    return;
                }
                continue;
            }
        };
        link.mark_up();
        backoff.reset();
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.tick().await;
        let failure = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => inbox(msg.get_payload_bytes()),
                    None => break "connection closed".to_string(),
                },
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    match apply(&mut sink, &change, timeout).await {
                        Ok(()) => { let _ = change.done.send(Ok(())); }
                        Err(e) => {
                            let _ = change.done.send(Err(BusError::Unavailable(format!("redis subscriber: {e}"))));
                            break e;
                        }
                    }
                }
                _ = idle.tick() => {
                    if let Err(e) = with_timeout(timeout, sink.ping::<redis::Value>()).await {
                        break e;
                    }
                }
            }
        };
        link.mark_down(&failure);
        if !wait_refusing(&mut changes, backoff.next_delay(), &link).await {
            return;
        }
    }
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

/// Sleeps `delay` while answering interest changes with "unavailable" (they are
/// already recorded and will be applied on reconnect). Returns false if the engine
/// is gone.
async fn wait_refusing(
    changes: &mut mpsc::UnboundedReceiver<InterestChange>,
    delay: Duration,
    link: &Link,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            change = changes.recv() => match change {
                Some(change) => { let _ = change.done.send(Err(BusError::Unavailable(link.reason()))); }
                None => return false,
            },
        }
    }
}

async fn run_publisher(
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    mut outbox: mpsc::Receiver<Outgoing>,
) {
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
                for ((_, _, counted), n) in batch.drain(..).zip(receivers) {
                    if let Some(tx) = counted {
                        let _ = tx.send(n);
                    }
                }
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
