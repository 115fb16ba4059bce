//! [`RedisPresence`]: who is in each presence topic and who is online, for
//! every node, in Redis, with node leases so a dead node's entries are removed
//! by a survivor; and its webhook [`EventQueue`] on a Redis stream.
//!
//! Every change is one Lua script on a fixed set of keys (`lua/apply.lua`), so a
//! join costs the same in a topic of one member or of 100,000; all timestamps
//! come from Redis `TIME`. The keys, the scripts and the lease are described in
//! docs/ARCHITECTURE.md, "Presence in Redis".

mod keys;
mod queue;
mod scripts;
mod sync;
mod worker;

use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::registry::Registry;
use realtime::cluster::bus::BusStatus;
use realtime::presence::{
    ClusterCounts, EventQueue, Member, MemberPage, PresenceError, PresenceFuture, PresenceSettings,
    PresenceSink, PresenceStore, SnapshotFn, TopicCounts, UserStatus,
};
use realtime::realtime_core::{ConnectionId, Topic};
use redis::Client;
use tokio::sync::{mpsc, oneshot};

use crate::RedisConfig;
use crate::link::Link;
use crate::metrics::{LinkGauges, PresenceMetrics};
use keys::Entry;
pub use queue::RedisEvents;

type Done<T> = oneshot::Sender<Result<T, PresenceError>>;

/// One change of this node's presence.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub(crate) add: bool,
    pub(crate) entry: Entry,
    /// `{"connected_at","info"}` of a member being added.
    pub(crate) record: Option<String>,
}

/// What the worker is asked to do, in order.
pub(crate) enum Command {
    Write(Op, Done<()>),
    Members {
        topic: Topic,
        after: Option<String>,
        limit: usize,
        done: Done<MemberPage>,
    },
    TopicCounts(Topic, Done<TopicCounts>),
    User(String, Done<UserStatus>),
    Counts(Done<ClusterCounts>),
    /// Delivered webhook events to remove from the stream.
    Ack(String, Done<()>),
    Leave(Done<()>),
}

impl Command {
    pub(crate) fn refuse(self, reason: &str) {
        let err = || PresenceError::Unavailable(reason.to_owned());
        match self {
            Command::Write(_, done) | Command::Ack(_, done) | Command::Leave(done) => {
                let _ = done.send(Err(err()));
            }
            Command::Members { done, .. } => {
                let _ = done.send(Err(err()));
            }
            Command::TopicCounts(_, done) => {
                let _ = done.send(Err(err()));
            }
            Command::User(_, done) => {
                let _ = done.send(Err(err()));
            }
            Command::Counts(done) => {
                let _ = done.send(Err(err()));
            }
        }
    }
}

/// A member's stored record: what a page shows besides its user and connection.
pub(crate) fn record(member: &Member) -> String {
    serde_json::json!({"connected_at": member.connected_at, "info": member.info}).to_string()
}

/// A member from its user, connection and stored record. A record that cannot
/// be read still lists the member, without its details.
pub(crate) fn member(user: String, conn: ConnectionId, record: &str) -> Member {
    let parsed: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
    Member {
        user_id: user,
        connection_id: conn,
        connected_at: parsed["connected_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        info: parsed["info"].as_object().cloned().unwrap_or_default(),
    }
}

fn stopped() -> PresenceError {
    PresenceError::Unavailable("redis presence stopped".into())
}

/// Presence in Redis, shared by every node on the same Redis and prefix. Create
/// it with [`crate::RedisCluster::presence`]; the engine starts it.
pub struct RedisPresence {
    client: Client,
    config: RedisConfig,
    link: Arc<Link>,
    commands: mpsc::UnboundedSender<Command>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    events: OnceLock<Arc<RedisEvents>>,
    metrics: PresenceMetrics,
}

impl RedisPresence {
    pub(crate) fn new(
        client: Client,
        config: RedisConfig,
        gauges: LinkGauges,
        metrics: PresenceMetrics,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        RedisPresence {
            client,
            config,
            link: Arc::new(Link::with_gauges("presence", gauges)),
            commands,
            receiver: Mutex::new(Some(receiver)),
            events: OnceLock::new(),
            metrics,
        }
    }

    fn ask<T: Send + 'static>(
        &self,
        command: impl FnOnce(Done<T>) -> Command,
        op: &'static str,
    ) -> PresenceFuture<T> {
        let (done, answer) = oneshot::channel();
        let _ = self.commands.send(command(done));
        let errors = self.metrics.errors(op);
        Box::pin(async move {
            let answer = answer.await.unwrap_or_else(|_| Err(stopped()));
            if answer.is_err() {
                errors.inc();
            }
            answer
        })
    }

    fn write(&self, op: Op) -> PresenceFuture<()> {
        self.ask(|done| Command::Write(op, done), "write")
    }
}

impl PresenceStore for RedisPresence {
    fn start(
        &self,
        node: String,
        settings: PresenceSettings,
        snapshot: SnapshotFn,
        sink: PresenceSink,
    ) {
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.link
                .mark_down(&"presence must be started inside a tokio runtime");
            return;
        };
        let keys = keys::Keys::new(&self.config.prefix, &node);
        let shared = settings.events.then(|| {
            let events = Arc::new(RedisEvents::new(
                self.client.clone(),
                &self.config,
                keys.clone(),
                self.commands.clone(),
                self.metrics.clone(),
            ));
            events.start(&runtime);
            let _ = self.events.set(events.clone());
            events.shared()
        });
        let worker = worker::Worker {
            client: self.client.clone(),
            config: self.config.clone(),
            link: self.link.clone(),
            keys,
            settings,
            snapshot,
            sink,
            events: shared,
            metrics: self.metrics.clone(),
            generation: String::new(),
            leased: false,
        };
        runtime.spawn(worker.run(receiver));
    }

    fn connected(&self, user_id: &str, connection: ConnectionId) -> PresenceFuture<()> {
        self.write(Op {
            add: true,
            entry: Entry::Connection {
                user: user_id.to_owned(),
                conn: connection,
            },
            record: None,
        })
    }

    fn disconnected(&self, user_id: &str, connection: ConnectionId) -> PresenceFuture<()> {
        self.write(Op {
            add: false,
            entry: Entry::Connection {
                user: user_id.to_owned(),
                conn: connection,
            },
            record: None,
        })
    }

    fn joined(&self, topic: &Topic, member: Member) -> PresenceFuture<()> {
        self.write(Op {
            add: true,
            entry: Entry::member(topic, &member.user_id, member.connection_id),
            record: Some(record(&member)),
        })
    }

    fn left(&self, topic: &Topic, user_id: &str, connection: ConnectionId) -> PresenceFuture<()> {
        self.write(Op {
            add: false,
            entry: Entry::member(topic, user_id, connection),
            record: None,
        })
    }

    fn members(
        &self,
        topic: &Topic,
        after: Option<String>,
        limit: usize,
    ) -> PresenceFuture<MemberPage> {
        let topic = topic.clone();
        self.ask(
            |done| Command::Members {
                topic,
                after,
                limit,
                done,
            },
            "read",
        )
    }

    fn topic_counts(&self, topic: &Topic) -> PresenceFuture<TopicCounts> {
        let topic = topic.clone();
        self.ask(|done| Command::TopicCounts(topic, done), "read")
    }

    fn user(&self, user_id: &str) -> PresenceFuture<UserStatus> {
        let user = user_id.to_owned();
        self.ask(|done| Command::User(user, done), "read")
    }

    fn counts(&self) -> PresenceFuture<ClusterCounts> {
        self.ask(Command::Counts, "read")
    }

    fn leave(&self) -> PresenceFuture<()> {
        self.ask(Command::Leave, "leave")
    }

    fn status(&self) -> BusStatus {
        if self.link.is_up() {
            BusStatus::Up
        } else {
            BusStatus::Down {
                reason: self.link.reason(),
            }
        }
    }

    fn events(&self) -> Option<Arc<dyn EventQueue>> {
        self.events.get().map(|e| e.clone() as Arc<dyn EventQueue>)
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }
}
