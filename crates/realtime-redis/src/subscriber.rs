//! The subscriber link: one pub/sub connection holding exactly the channels the
//! engine asked for. A reader task per connection moves every message into the
//! bounded inbound hand-off; this task applies interest changes, checks the link,
//! and on failure lets the reader queue what it already read before reconnecting.
//! Every connection but a first one made at the first attempt is announced to
//! the inbox as `BusEvent::Resumed` before anything it reads, whether the last
//! one broke, was dropped because the engine fell behind, or never came up (a
//! node started before Redis answered has acknowledged subscribes it could not
//! yet make); once such a connection has subscribed every channel again it is
//! announced as `BusEvent::Resubscribed`, so history topics are read once more.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use realtime::cluster::bus::BusError;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Client, Msg};
use tokio::sync::{mpsc, oneshot};

use crate::RedisConfig;
use crate::backoff::Backoff;
use crate::bus::{IDLE_CHECK, InterestChange};
use crate::inbound::Inbound;
use crate::link::Link;

/// Channels per SUBSCRIBE command when restoring a large set.
const SUBSCRIBE_CHUNK: usize = 1000;

/// What the subscriber task works with.
pub(crate) struct Subscriber {
    pub(crate) client: Client,
    pub(crate) config: RedisConfig,
    pub(crate) link: Arc<Link>,
    pub(crate) desired: Arc<Mutex<HashSet<String>>>,
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) dropped: Counter,
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

pub(crate) async fn run_subscriber(
    sub: Subscriber,
    mut changes: mpsc::UnboundedReceiver<InterestChange>,
) {
    let config = &sub.config;
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let timeout = config.command_timeout;
    // Whether an attempt was made before this one: then the engine may already
    // have subscribers that missed what was published meanwhile.
    let mut attempted_before = false;
    loop {
        let announce = std::mem::replace(&mut attempted_before, true);
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
        // The reader of the last connection has queued all it will, and the one
        // for this connection starts below: the mark falls exactly between them.
        if announce {
            sub.inbound.resumed();
        }
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
                // A history read made at `Resumed` raced these SUBSCRIBEs: the
                // engine reads again now that every channel is live.
                if announce {
                    sub.inbound.resubscribed();
                }
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
