//! Multi-node relay: how one engine shares work with others through a
//! [`MessageBus`]. It turns sends into envelopes, keeps the node subscribed to
//! exactly the channels its local connections need (reference-counted), delivers
//! what arrives, answers control requests for its connections, and keeps the
//! cluster directory up to date.

pub mod bus;
pub mod memory;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Shared;
use realtime_core::{Body, Channels, ControlOp, ControlReply, Envelope, NodeTag, Route};
use tokio::sync::oneshot;

use bus::{BusError, BusFuture, BusStatus, ClusterDirectory, DirectoryEntry, MessageBus};

/// How an engine joins a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// A label for this node in cluster views (e.g. `REALTIME_NODE_ID`).
    pub node_id: String,
    /// Prefix of every channel and key, so deployments can share one bus.
    pub prefix: String,
    pub bus: Arc<dyn MessageBus>,
    pub directory: Arc<dyn ClusterDirectory>,
    /// Where history topics keep their publications, shared by every node; needed
    /// when the topic policy gives any namespace history (without it, publishing
    /// to and recovering on history topics fail with `HistoryError::Unavailable`).
    pub history: Option<Arc<dyn crate::history::HistoryStore>>,
    /// Where presence (topic members, online status, node leases) is kept,
    /// shared by every node. Without it each node keeps its own, answers only
    /// for its own connections, and says so (`degraded`).
    pub presence: Option<Arc<dyn crate::presence::PresenceStore>>,
    /// How long a request to another node (e.g. subscribe one of its connections)
    /// may take. Default 5 s.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A cluster operation that could not be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the node owning the connection did not answer in time")]
    Timeout,
}

/// The bus's answer to one subscribe request, awaited by every connection that
/// needs one of its channels while it is in flight (and resolved at once after).
type Activation = Shared<BusFuture>;

/// Why this node listens on one channel.
struct Interest {
    /// Local reasons to be subscribed (connections of a user, holders of a role,
    /// subscribers of a topic).
    holders: usize,
    active: Activation,
}

impl Interest {
    /// A subscribe the bus refused (it was down): the channel is re-applied when
    /// the bus reconnects, but no confirmation will ever come through this future.
    fn refused(&self) -> bool {
        matches!(self.active.peek(), Some(Err(_)))
    }
}

/// The engine's side of the cluster.
pub(crate) struct Relay {
    pub(crate) tag: NodeTag,
    pub(crate) node_id: String,
    pub(crate) channels: Channels,
    pub(crate) bus: Arc<dyn MessageBus>,
    pub(crate) directory: Arc<dyn ClusterDirectory>,
    request_timeout: Duration,
    /// channel -> local reasons to be subscribed and the bus's confirmation.
    interest: Mutex<HashMap<String, Interest>>,
    /// Next sequence number; held while publishing so sequence order is bus order.
    seq: Mutex<u64>,
    /// origin -> last sequence number seen (duplicate suppression).
    seen: Mutex<HashMap<NodeTag, u64>>,
    next_request: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<ControlReply>>>,
}

impl Relay {
    pub(crate) fn new(tag: NodeTag, config: ClusterConfig) -> Relay {
        Relay {
            tag,
            node_id: config.node_id,
            channels: Channels::new(config.prefix),
            bus: config.bus,
            directory: config.directory,
            request_timeout: config.request_timeout,
            interest: Mutex::new(HashMap::new()),
            seq: Mutex::new(0),
            seen: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The channels every node keeps: its own and the broadcast channel.
    pub(crate) fn permanent_channels(&self) -> Vec<String> {
        vec![self.channels.node(self.tag), self.channels.broadcast()]
    }

    pub(crate) fn status(&self) -> BusStatus {
        self.bus.status()
    }

    pub(crate) fn ensure_up(&self) -> Result<(), BusError> {
        match self.bus.status() {
            BusStatus::Up => Ok(()),
            BusStatus::Down { reason } => Err(BusError::Unavailable(reason)),
        }
    }

    /// Publishes `body` on `channel` with the next sequence number.
    pub(crate) fn publish(&self, channel: String, body: Body) -> Result<(), BusError> {
        self.publish_with(channel, body, |bus, channel, bytes| {
            bus.publish(channel, bytes)
        })
    }

    /// Numbers `body` and hands it to the bus with `send`, under the sequence lock
    /// so sequence order is bus order.
    fn publish_with<T>(
        &self,
        channel: String,
        body: Body,
        send: impl FnOnce(&dyn MessageBus, String, Vec<u8>) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        let envelope = Envelope {
            origin: self.tag,
            seq: *seq + 1,
            body,
        };
        let sent = send(self.bus.as_ref(), channel, envelope.encode())?;
        *seq += 1;
        Ok(sent)
    }

    /// Relays a message along `route` to the other nodes.
    pub(crate) fn relay_message(&self, route: &Route, payload: &str) -> Result<(), BusError> {
        let channel = self.channels.for_route(route);
        self.publish(
            channel,
            Body::Message {
                route: route.clone(),
                payload: payload.as_bytes().to_vec(),
            },
        )
    }

    /// Adds one reason to be subscribed to each channel and resolves once the bus
    /// receives all of them. A channel whose subscribe is still in flight is
    /// awaited, not assumed: an acknowledgement given here means "reachable from
    /// every node" for the second subscriber as much as for the first.
    pub(crate) fn acquire(&self, channels: Vec<String>) -> BusFuture {
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        let mut subscribe = Vec::new();
        let mut waits = Vec::new();
        for channel in channels {
            match interest.get_mut(&channel) {
                Some(entry) => {
                    entry.holders += 1;
                    if entry.refused() {
                        // Ask again: SUBSCRIBE is idempotent, and this is the only
                        // way to learn when the channel is really active.
                        subscribe.push(channel);
                    } else {
                        waits.push(entry.active.clone());
                    }
                }
                None => subscribe.push(channel),
            }
        }
        if !subscribe.is_empty() {
            // Requested under the lock, so the bus sees changes in refcount order.
            let active = self
                .bus
                .update_interest(subscribe.clone(), Vec::new())
                .shared();
            for channel in subscribe {
                interest
                    .entry(channel)
                    .and_modify(|e| e.active = active.clone())
                    .or_insert_with(|| Interest {
                        holders: 1,
                        active: active.clone(),
                    });
            }
            waits.push(active);
        }
        drop(interest);
        Box::pin(futures_util::future::try_join_all(waits).map(|r| r.map(drop)))
    }

    /// Removes one reason per channel; unsubscribes channels nobody needs any more.
    /// Connections still awaiting a channel's subscribe keep their own copy of it.
    pub(crate) fn release(&self, channels: Vec<String>) {
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = Vec::new();
        for channel in channels {
            if let Some(entry) = interest.get_mut(&channel) {
                entry.holders -= 1;
                if entry.holders == 0 {
                    interest.remove(&channel);
                    gone.push(channel);
                }
            }
        }
        if !gone.is_empty() {
            // The change is recorded when requested; nobody needs to wait for it.
            drop(self.bus.update_interest(Vec::new(), gone));
        }
    }

    /// The channels a connection of `user` with `roles` needs.
    pub(crate) fn identity_channels<'a>(
        &self,
        user: &str,
        roles: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        std::iter::once(self.channels.user(user))
            .chain(roles.map(|r| self.channels.role(r)))
            .collect()
    }

    pub(crate) fn upsert(&self, connection: crate::ConnectionSummary) -> BusFuture {
        self.directory.upsert(DirectoryEntry {
            node: self.node_id.clone(),
            connection,
        })
    }

    /// Whether an envelope is new (not ours, not seen before).
    pub(crate) fn accept(&self, envelope: &Envelope) -> bool {
        if envelope.origin == self.tag {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.entry(envelope.origin).or_insert(0);
        if envelope.seq <= *last {
            return false;
        }
        *last = envelope.seq;
        true
    }

    /// Sends `op` to the node that owns the connection and awaits its answer.
    pub(crate) async fn request(
        &self,
        owner: NodeTag,
        op: ControlOp,
    ) -> Result<ControlReply, ClusterError> {
        self.ensure_up()?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Removes the entry however this ends, including when the caller gives up
        // and drops this future (a client that disconnected, a timeout around it).
        let _pending = PendingRequest { relay: self, id };
        let body = Body::Request {
            id,
            reply_to: self.tag,
            op,
        };
        let heard = self.publish_with(self.channels.node(owner), body, |bus, channel, bytes| {
            Ok(bus.publish_counted(channel, bytes))
        });
        match heard {
            Err(e) => Err(ClusterError::Bus(e)),
            Ok(count) => match tokio::time::timeout(self.request_timeout, async {
                // Nobody listens on the owner's channel: no live node owns the id.
                if count.await? == 0 {
                    return Ok(ControlReply {
                        found: false,
                        changed: false,
                    });
                }
                rx.await.map_err(|_| ClusterError::Timeout)
            })
            .await
            {
                Ok(result) => result,
                Err(_) => Err(ClusterError::Timeout),
            },
        }
    }

    /// Requests still waiting for their answer.
    #[cfg(test)]
    fn pending_requests(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Answers a request from `to`.
    pub(crate) fn reply(&self, to: NodeTag, id: u64, reply: ControlReply) {
        if let Err(e) = self.publish(self.channels.node(to), Body::Reply { id, reply }) {
            tracing::debug!(error = %e, "could not answer a cluster request");
        }
    }

    /// Whether the cluster directory can record and list connections right now.
    pub(crate) fn directory_status(&self) -> BusStatus {
        self.directory.status()
    }

    /// Hands an answer to the request waiting for it.
    pub(crate) fn resolve(&self, id: u64, reply: ControlReply) {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(reply);
        }
    }
}

/// A request's place in [`Relay::pending`], given back when the request ends.
struct PendingRequest<'a> {
    relay: &'a Relay,
    id: u64,
}

impl Drop for PendingRequest<'_> {
    fn drop(&mut self) {
        self.relay
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::{CountFuture, Inbox};

    /// A bus that is up and carries requests, but whose owner never answers.
    struct SilentOwner;

    impl MessageBus for SilentOwner {
        fn start(&self, _inbox: Inbox, _always: Vec<String>) {}
        fn publish(&self, _channel: String, _envelope: Vec<u8>) -> Result<(), BusError> {
            Ok(())
        }
        fn publish_counted(&self, _channel: String, _envelope: Vec<u8>) -> CountFuture {
            Box::pin(async { Ok(1) })
        }
        fn update_interest(&self, _: Vec<String>, _: Vec<String>) -> BusFuture {
            Box::pin(async { Ok(()) })
        }
        fn status(&self) -> BusStatus {
            BusStatus::Up
        }
    }

    /// Interest changes the test answers by hand: (subscribe, unsubscribe, answer).
    type Asked = (
        Vec<String>,
        Vec<String>,
        oneshot::Sender<Result<(), BusError>>,
    );

    /// A bus whose subscribes stay in flight until the test answers them.
    #[derive(Default)]
    struct HeldSubscribes {
        asked: Mutex<Vec<Asked>>,
    }

    impl MessageBus for HeldSubscribes {
        fn start(&self, _inbox: Inbox, _always: Vec<String>) {}
        fn publish(&self, _channel: String, _envelope: Vec<u8>) -> Result<(), BusError> {
            Ok(())
        }
        fn publish_counted(&self, _channel: String, _envelope: Vec<u8>) -> CountFuture {
            Box::pin(async { Ok(1) })
        }
        fn update_interest(&self, subscribe: Vec<String>, unsubscribe: Vec<String>) -> BusFuture {
            let (answer, answered) = oneshot::channel();
            self.asked
                .lock()
                .unwrap()
                .push((subscribe, unsubscribe, answer));
            Box::pin(async move { answered.await.unwrap_or(Ok(())) })
        }
        fn status(&self) -> BusStatus {
            BusStatus::Up
        }
    }

    impl HeldSubscribes {
        fn take(&self) -> Vec<Asked> {
            std::mem::take(&mut *self.asked.lock().unwrap())
        }
    }

    fn relay_on(bus: Arc<dyn MessageBus>) -> Relay {
        Relay::new(
            NodeTag::from_random(1),
            ClusterConfig {
                node_id: "a".into(),
                prefix: "t".into(),
                bus,
                directory: memory::MemoryHub::new().directory(),
                history: None,
                presence: None,
                request_timeout: Duration::from_secs(3600),
            },
        )
    }

    #[test]
    fn every_acquirer_of_a_channel_waits_for_its_subscribe() {
        let bus = Arc::new(HeldSubscribes::default());
        let relay = relay_on(bus.clone());
        let news = || vec!["t:topic:news".to_owned()];
        let mut first = relay.acquire(news());
        let mut second = relay.acquire(news());
        let asked = bus.take();
        assert_eq!(asked.len(), 1, "one SUBSCRIBE for both");
        assert!((&mut first).now_or_never().is_none());
        assert!(
            (&mut second).now_or_never().is_none(),
            "the second acquirer is not acknowledged before the bus confirms"
        );
        let (subscribe, _, answer) = asked.into_iter().next().unwrap();
        assert_eq!(subscribe, news());
        answer.send(Ok(())).unwrap();
        assert_eq!(first.now_or_never(), Some(Ok(())));
        assert_eq!(second.now_or_never(), Some(Ok(())));
        // Once confirmed, later acquirers are answered at once, without the bus.
        assert_eq!(relay.acquire(news()).now_or_never(), Some(Ok(())));
        assert!(bus.take().is_empty());
    }

    #[test]
    fn a_refused_subscribe_reaches_every_waiter_and_is_asked_again() {
        let bus = Arc::new(HeldSubscribes::default());
        let relay = relay_on(bus.clone());
        let news = || vec!["t:topic:news".to_owned()];
        let first = relay.acquire(news());
        let second = relay.acquire(news());
        let down = BusError::Unavailable("down".into());
        let (_, _, answer) = bus.take().pop().unwrap();
        answer.send(Err(down.clone())).unwrap();
        assert_eq!(first.now_or_never(), Some(Err(down.clone())));
        assert_eq!(second.now_or_never(), Some(Err(down)));

        let mut third = relay.acquire(news());
        let asked = bus.take();
        assert_eq!(asked.len(), 1, "the channel is subscribed again");
        assert!((&mut third).now_or_never().is_none());
        let (subscribe, _, answer) = asked.into_iter().next().unwrap();
        assert_eq!(subscribe, news());
        answer.send(Ok(())).unwrap();
        assert_eq!(third.now_or_never(), Some(Ok(())));
    }

    #[test]
    fn a_release_while_the_subscribe_is_in_flight_keeps_its_waiters() {
        let bus = Arc::new(HeldSubscribes::default());
        let relay = relay_on(bus.clone());
        let news = || vec!["t:topic:news".to_owned()];
        let mut waiting = relay.acquire(news());
        let (_, _, subscribed) = bus.take().pop().unwrap();
        relay.release(news());
        let asked = bus.take();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].1, news(), "unsubscribed once nobody needs it");
        assert!((&mut waiting).now_or_never().is_none());
        subscribed.send(Ok(())).unwrap();
        assert_eq!(waiting.now_or_never(), Some(Ok(())));
        // A new first acquirer subscribes afresh.
        let _again = relay.acquire(news());
        assert_eq!(bus.take()[0].0, news());
    }

    fn relay() -> Relay {
        Relay::new(
            NodeTag::from_random(1),
            ClusterConfig {
                node_id: "a".into(),
                prefix: "t".into(),
                bus: Arc::new(SilentOwner),
                directory: memory::MemoryHub::new().directory(),
                history: None,
                presence: None,
                request_timeout: Duration::from_secs(3600),
            },
        )
    }

    #[tokio::test]
    async fn a_request_whose_caller_gives_up_leaves_nothing_pending() {
        let relay = relay();
        let owner = NodeTag::from_random(2);
        let op = || ControlOp::Disconnect {
            connection: owner.connection_id([7; 16]),
        };
        let mut first = Box::pin(relay.request(owner, op()));
        let mut second = Box::pin(relay.request(owner, op()));
        assert!((&mut first).now_or_never().is_none(), "no answer yet");
        assert!((&mut second).now_or_never().is_none(), "no answer yet");
        assert_eq!(relay.pending_requests(), 2);

        // The HTTP client went away: its handler's future is dropped mid-flight.
        drop(first);
        assert_eq!(relay.pending_requests(), 1);
        // A timeout wrapper around the call gives up.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), second)
                .await
                .is_err()
        );
        assert_eq!(relay.pending_requests(), 0);
    }
}
