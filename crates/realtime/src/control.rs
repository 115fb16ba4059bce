//! Operations on one connection wherever it lives (subscribe, unsubscribe,
//! disconnect, confirmed send), cluster-wide views, and the handling of envelopes
//! that arrive from other nodes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use realtime_core::{
    Body, CloseCode, ConnectionId, ControlOp, ControlReply, Envelope, NodeTag, PreparedMessage,
    Route, Topic,
};

use crate::cluster::bus::{
    BusStatus, ConnectionKey, ConnectionPage, DirectoryEntry, Page, PageRequest, TopicPage,
};
use crate::cluster::{ClusterError, Relay};
use crate::error::{SendError, SubscribeError};
use crate::handle::ConnectionHandle;
use crate::history::engine::HistorySubscribeError;
use crate::service::{Delivery, Realtime, now_rfc3339};
use realtime_core::history::PUBLICATION_MARK;

/// Page size when a caller asks for a whole cluster view.
const WHOLE_VIEW_PAGE: usize = 1000;

impl Realtime {
    /// Subscribes a connection to a topic on the server's authority (no topic
    /// policy), wherever the connection lives. Returns `true` when it was not
    /// subscribed before. Once this returns, publishes from any node reach it.
    pub async fn subscribe(&self, id: ConnectionId, topic: &str) -> Result<bool, SubscribeError> {
        let topic = self.parse_topic(topic)?;
        if let Some(relay) = self.remote_relay(&id) {
            let op = ControlOp::Subscribe {
                connection: id,
                topic: topic.to_string(),
            };
            return found_changed(relay.request(NodeTag::of_connection(&id), op).await?);
        }
        let handle = self.local_handle(id)?;
        self.subscribe_local(&handle, &topic).await
    }

    /// Unsubscribes a connection, wherever it lives. Returns `true` when it was subscribed.
    pub async fn unsubscribe(&self, id: ConnectionId, topic: &str) -> Result<bool, SubscribeError> {
        let topic = self.parse_topic(topic)?;
        if let Some(relay) = self.remote_relay(&id) {
            let op = ControlOp::Unsubscribe {
                connection: id,
                topic: topic.to_string(),
            };
            return found_changed(relay.request(NodeTag::of_connection(&id), op).await?);
        }
        let handle = self.local_handle(id)?;
        Ok(self.unsubscribe_local(&handle, &topic).await)
    }

    /// Closes one connection with 3503 (do not reconnect), wherever it lives.
    /// Returns whether it existed.
    pub async fn disconnect(&self, id: ConnectionId) -> Result<bool, ClusterError> {
        if let Some(relay) = self.remote_relay(&id) {
            let reply = relay
                .request(
                    NodeTag::of_connection(&id),
                    ControlOp::Disconnect { connection: id },
                )
                .await?;
            return Ok(reply.found);
        }
        Ok(self.disconnect_local(id))
    }

    /// Closes every connection of a user with 3503, on every node. `local` counts
    /// the connections closed on this node.
    pub fn disconnect_user(&self, user_id: &str) -> Result<Delivery, SendError> {
        let relayed = match &self.inner.relay {
            Some(relay) => {
                relay.ensure_up()?;
                relay.publish(
                    relay.channels.user(user_id),
                    Body::DisconnectUser {
                        user: user_id.to_owned(),
                    },
                )?;
                true
            }
            None => false,
        };
        Ok(Delivery {
            local: self.disconnect_user_local(user_id),
            relayed,
            position: None,
        })
    }

    /// Sends raw JSON to one connection and reports what its owning node did with
    /// it: `found` (the connection exists) and `changed` (the message was queued).
    /// For a connection on another node this waits for that node's answer.
    pub async fn send_json_confirmed(
        &self,
        id: ConnectionId,
        body: &[u8],
    ) -> Result<ControlReply, SendError> {
        let prepared = PreparedMessage::from_slice(body, &now_rfc3339(), None)?;
        if let Some(relay) = self.remote_relay(&id) {
            let op = ControlOp::Deliver {
                connection: id,
                payload: prepared.into_string().into_bytes(),
            };
            return Ok(relay.request(NodeTag::of_connection(&id), op).await?);
        }
        let found = self.inner.registry.get(id).is_some();
        let queued = self.deliver(&Route::Connection(id), prepared) == 1;
        Ok(ControlReply {
            found,
            changed: queued,
        })
    }

    /// One page of the connections on every node (this node's only, labelled
    /// `local`, without a cluster), ordered by node label, then connection id.
    pub async fn cluster_connections_page(
        &self,
        page: PageRequest<ConnectionKey>,
    ) -> Result<ConnectionPage, ClusterError> {
        match &self.inner.relay {
            Some(relay) => Ok(relay.directory.list(page).await?),
            None => {
                let mut local: Vec<(ConnectionKey, DirectoryEntry)> = self
                    .connections()
                    .into_iter()
                    .map(|connection| {
                        let entry = DirectoryEntry {
                            node: "local".into(),
                            connection,
                        };
                        ((entry.node.clone(), entry.connection.id), entry)
                    })
                    .collect();
                local.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Page::from_sorted(local, page))
            }
        }
    }

    /// One page of topic → subscriber count over every node, ordered by topic.
    pub async fn cluster_topics_page(
        &self,
        page: PageRequest<String>,
    ) -> Result<TopicPage, ClusterError> {
        match &self.inner.relay {
            Some(relay) => Ok(relay.directory.topics(page).await?),
            None => Ok(Page::from_sorted(
                self.topics().into_iter().map(|(t, n)| (t.clone(), (t, n))),
                page,
            )),
        }
    }

    /// Every connection on every node (this node's only, without a cluster),
    /// sorted by connect time. Reads the directory page by page.
    pub async fn cluster_connections(&self) -> Result<Vec<DirectoryEntry>, ClusterError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .cluster_connections_page(PageRequest {
                    limit: WHOLE_VIEW_PAGE,
                    after,
                })
                .await?;
            all.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        all.sort_by(|a, b| {
            (&a.connection.connected_at, a.connection.id)
                .cmp(&(&b.connection.connected_at, b.connection.id))
        });
        Ok(all)
    }

    /// Topic → subscriber count over every node. Reads the directory page by page.
    pub async fn cluster_topics(&self) -> Result<BTreeMap<String, usize>, ClusterError> {
        let mut topics = BTreeMap::new();
        let mut after = None;
        loop {
            let page = self
                .cluster_topics_page(PageRequest {
                    limit: WHOLE_VIEW_PAGE,
                    after,
                })
                .await?;
            topics.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(topics)
    }

    /// Whether the cluster directory (the source of the cluster views) can be
    /// written and read (always, for a single node).
    pub fn directory_status(&self) -> BusStatus {
        self.inner
            .relay
            .as_ref()
            .map_or(BusStatus::Up, Relay::directory_status)
    }

    /// The relay, when `id` belongs to another node.
    fn remote_relay(&self, id: &ConnectionId) -> Option<&Relay> {
        self.inner.relay.as_ref().filter(|_| !self.is_local(id))
    }

    fn local_handle(&self, id: ConnectionId) -> Result<Arc<ConnectionHandle>, SubscribeError> {
        self.inner
            .registry
            .get(id)
            .ok_or(SubscribeError::UnknownConnection)
    }

    /// Subscribes a local connection and, in a cluster, waits until the node
    /// receives the topic's channel and the directory shows the subscription. On
    /// a history topic it also reads the topic's position, so this node knows
    /// where delivery stands (no replay: a server-side subscribe starts now).
    pub(crate) async fn subscribe_local(
        &self,
        handle: &Arc<ConnectionHandle>,
        topic: &Topic,
    ) -> Result<bool, SubscribeError> {
        let Some(limits) = self.history_limits(topic) else {
            return self.subscribe_channel(handle, topic).await;
        };
        // Run to the end even when the caller gives up (an HTTP client that
        // disconnects drops its request's future): stopped mid-read, the
        // connection would stay subscribed but recovering, its deliveries
        // buffered and never sent.
        let (rt, handle, topic) = (self.clone(), handle.clone(), topic.clone());
        let subscribing = tokio::spawn(async move {
            rt.subscribe_history(&handle, &topic, limits, None, None)
                .await
        });
        match subscribing.await {
            Ok(done) => done.map_err(|e| match e {
                HistorySubscribeError::Gone => SubscribeError::UnknownConnection,
                HistorySubscribeError::Store(e) => SubscribeError::History(e),
            }),
            // Only a panic or the runtime shutting down stops the task.
            Err(_) => Err(SubscribeError::UnknownConnection),
        }
    }

    /// Subscribes a local connection in the registry and on the bus.
    pub(crate) async fn subscribe_channel(
        &self,
        handle: &Arc<ConnectionHandle>,
        topic: &Topic,
    ) -> Result<bool, SubscribeError> {
        let relay = self.inner.relay.as_ref();
        let presence = self.presence_mode(topic);
        let mut cluster = None;
        let added = self
            .inner
            .registry
            .subscribe(handle, topic, || {
                // Requested under the topic-set lock, so the bus, the directory
                // and the presence store see one connection's changes to a topic
                // in order.
                cluster = relay.map(|r| {
                    let interest = r.acquire(vec![r.channels.topic(topic.as_str())]);
                    let recorded = r.directory.add_topic(handle.id(), topic.to_string());
                    futures_util::future::join(interest, recorded)
                });
                if let Some(mode) = presence {
                    self.presence_joined(handle, topic, mode);
                }
            })
            .map_err(|_| SubscribeError::UnknownConnection)?;
        if let Some(cluster) = cluster {
            let (a, b) = cluster.await;
            if let Err(e) = a.and(b) {
                // Recorded locally and re-applied when the bus reconnects.
                tracing::debug!(error = %e, "subscription not yet active cluster-wide");
            }
        }
        Ok(added)
    }

    pub(crate) async fn unsubscribe_local(
        &self,
        handle: &Arc<ConnectionHandle>,
        topic: &Topic,
    ) -> bool {
        let removed = self.unsubscribe_channel(handle, topic).await;
        if self.history_limits(topic).is_some() {
            self.inner
                .trackers
                .leave(topic.as_str(), handle.id(), &self.inner.registry);
        }
        removed
    }

    /// Unsubscribes a local connection in the registry and on the bus.
    pub(crate) async fn unsubscribe_channel(
        &self,
        handle: &Arc<ConnectionHandle>,
        topic: &Topic,
    ) -> bool {
        let relay = self.inner.relay.as_ref();
        let presence = self.presence_mode(topic);
        let mut recorded = None;
        let removed = self.inner.registry.unsubscribe(handle, topic.as_str(), || {
            if let Some(r) = relay {
                r.release(vec![r.channels.topic(topic.as_str())]);
                recorded = Some(r.directory.remove_topic(handle.id(), topic.to_string()));
            }
            if let Some(mode) = presence {
                let info = handle.info();
                self.presence_left(topic, &info.user_id, info.id, mode);
            }
        });
        if let Some(recorded) = recorded {
            let _ = recorded.await;
        }
        removed
    }

    fn disconnect_local(&self, id: ConnectionId) -> bool {
        match self.unregister(id) {
            Some(handle) => {
                handle.close(CloseCode::ForceDisconnect);
                true
            }
            None => false,
        }
    }

    fn disconnect_user_local(&self, user_id: &str) -> usize {
        self.inner
            .registry
            .of_user(user_id)
            .iter()
            .filter(|h| self.disconnect_local(h.id()))
            .count()
    }

    /// The bus's receiving side came back after a break: what was published
    /// meanwhile did not arrive. History topics are filled in from the store;
    /// subscribers of other topics are told.
    pub(crate) fn on_bus_resumed(&self) {
        self.resume_after_bus_break();
    }

    pub(crate) fn on_bus_resubscribed(&self) {
        self.refill_history();
    }

    /// Handles one envelope from the bus (or a history publication from the bus
    /// or the store).
    pub(crate) fn on_envelope(&self, bytes: &[u8]) {
        if bytes.first() == Some(&PUBLICATION_MARK) {
            // Not deduplicated by origin: the origin delivers its own, and the
            // topic's tracker drops duplicates by offset.
            self.on_publication(bytes);
            return;
        }
        let Some(relay) = &self.inner.relay else {
            return;
        };
        let envelope = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "dropped an envelope from the bus");
                return;
            }
        };
        if !relay.accept(&envelope) {
            return;
        }
        match envelope.body {
            Body::Message { route, payload } => match String::from_utf8(payload) {
                Ok(text) => {
                    self.deliver_frame(&route, &Utf8Bytes::from(text));
                }
                Err(_) => tracing::warn!("dropped a relayed message that is not UTF-8"),
            },
            Body::DisconnectUser { user } => {
                self.disconnect_user_local(&user);
            }
            Body::Request { id, reply_to, op } => self.on_request(relay, reply_to, id, op),
            Body::Reply { id, reply } => relay.resolve(id, reply),
        }
    }

    fn on_request(&self, relay: &Relay, reply_to: NodeTag, id: u64, op: ControlOp) {
        let answer = |found: bool, changed: bool| ControlReply { found, changed };
        match op {
            ControlOp::Deliver {
                connection,
                payload,
            } => {
                let found = self.inner.registry.get(connection).is_some();
                let queued = match String::from_utf8(payload) {
                    Ok(text) => {
                        self.deliver_frame(&Route::Connection(connection), &Utf8Bytes::from(text))
                            == 1
                    }
                    Err(_) => false,
                };
                self.reply_later(relay, reply_to, id, answer(found, queued));
            }
            ControlOp::Disconnect { connection } => {
                let found = self.disconnect_local(connection);
                self.reply_later(relay, reply_to, id, answer(found, found));
            }
            ControlOp::Subscribe { connection, topic }
            | ControlOp::Unsubscribe { connection, topic }
                if tokio::runtime::Handle::try_current().is_err() =>
            {
                tracing::warn!(%connection, %topic, "cannot change a subscription outside a tokio runtime");
            }
            ControlOp::Subscribe { connection, topic } => {
                let rt = self.clone();
                tokio::spawn(async move {
                    let reply = match (rt.inner.registry.get(connection), rt.parse_topic(&topic)) {
                        (Some(handle), Ok(topic)) => {
                            match rt.subscribe_local(&handle, &topic).await {
                                Ok(added) => answer(true, added),
                                Err(_) => answer(false, false),
                            }
                        }
                        (found, _) => answer(found.is_some(), false),
                    };
                    if let Some(relay) = &rt.inner.relay {
                        relay.reply(reply_to, id, reply);
                    }
                });
            }
            ControlOp::Unsubscribe { connection, topic } => {
                let rt = self.clone();
                tokio::spawn(async move {
                    let reply = match (rt.inner.registry.get(connection), rt.parse_topic(&topic)) {
                        (Some(handle), Ok(topic)) => {
                            answer(true, rt.unsubscribe_local(&handle, &topic).await)
                        }
                        (found, _) => answer(found.is_some(), false),
                    };
                    if let Some(relay) = &rt.inner.relay {
                        relay.reply(reply_to, id, reply);
                    }
                });
            }
        }
    }

    /// Answers a request from a task rather than from inside the inbox. The
    /// in-memory bus runs the inbox within the requester's publish, under the
    /// requester's sequence lock; publishing the answer there takes this node's
    /// sequence lock too, and two requests crossing in opposite directions on two
    /// threads would deadlock.
    fn reply_later(&self, relay: &Relay, to: NodeTag, id: u64, reply: ControlReply) {
        if tokio::runtime::Handle::try_current().is_err() {
            relay.reply(to, id, reply);
            return;
        }
        let rt = self.clone();
        tokio::spawn(async move {
            if let Some(relay) = &rt.inner.relay {
                relay.reply(to, id, reply);
            }
        });
    }
}

fn found_changed(reply: ControlReply) -> Result<bool, SubscribeError> {
    if reply.found {
        Ok(reply.changed)
    } else {
        Err(SubscribeError::UnknownConnection)
    }
}
