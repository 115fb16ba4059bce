//! Redis adapters for Boundary Realtime: [`RedisBus`] (pub/sub relay between nodes),
//! [`RedisDirectory`] (the cluster-wide connection view, with expiry),
//! [`RedisHistory`] (per-topic history with offsets and epochs) and
//! [`RedisPresence`] (topic members and online status under node leases, with
//! its webhook event queue).
//!
//! All keep their own connections, reconnect by themselves with capped, jittered
//! backoff, and restore their state after a reconnect (the bus resubscribes every
//! channel and tells the engine it resumed; the directory rewrites this node's
//! records).
//!
//! # History keys
//!
//! Under the configured prefix (default `realtime`), per history topic:
//! - `{prefix}:history:{topic}`: a STREAM of the topic's publications, entry id
//!   `<offset>-0`, fields `p` (the publication's JSON, without its position) and
//!   `o` (`<node tag>:<seq>` of the append). Trimmed exactly to the namespace's
//!   `history_size` on every append (one entry out per entry in, so an append's
//!   cost does not grow with the size); expires `history_ttl` after the last
//!   append.
//! - `{prefix}:history-meta:{topic}`: a HASH with `epoch` and `top` (the latest
//!   offset). Expires `max(history_ttl, 24 h)` after the last append (or after the
//!   read that created it), so a client away while nothing was published still
//!   recovers. A read or append that finds no meta starts a new epoch (and drops
//!   any stream left over), so lost data is never mistaken for kept data.
//!
//! And per appending node: `{prefix}:history-origin:{node tag}`, a sorted set of
//! the node's last 4096 applied appends (`seq offset epoch`), expiring 24 h after
//! its last append. The publisher re-sends a batch whose reply was lost; the
//! append script finds the repeat there and answers its first position without
//! appending or publishing again.
//!
//! Appending, trimming, moving `top` and publishing the wire publication on the
//! topic's channel happen in one Lua script, so no node sees a publication live
//! that is not in history, or in history that was never published. Appends and
//! resets go through the bus's ordered outbox, interleaved with its publishes in
//! the order the node asked; reads use a connection of their own.
//!
//! # Persistence
//!
//! Offsets and epochs are only as durable as Redis. Without persistence a Redis
//! restart loses every topic's position: the next read or append starts a new
//! epoch, and clients are told they could not recover. Zero loss across a Redis
//! crash needs `appendonly yes` with `appendfsync always`. With `appendfsync
//! everysec` a crash may lose the last second of appends, and the offsets they had
//! are then given out again in the same epoch: a client that saw the lost ones
//! would take the new publications at those offsets for ones it already has.
//!
//! ```no_run
//! use realtime::{ClusterConfig, JwtVerifier, Realtime, RealtimeConfig};
//! use realtime_redis::{RedisCluster, RedisConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisCluster::new(RedisConfig::new("redis://127.0.0.1:6379"))?;
//! let verifier = JwtVerifier::hs256(b"secret", Default::default())?;
//! let rt = Realtime::clustered(verifier, RealtimeConfig::default(), redis.cluster_config("node-a"));
//! # Ok(()) }
//! ```

mod backoff;
mod bus;
mod directory;
mod history;
mod inbound;
mod link;
mod metrics;
mod outbox;
mod presence;
mod publisher;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

pub use bus::{BusLink, RedisBus};
pub use directory::RedisDirectory;
pub use history::RedisHistory;
pub use presence::{RedisEvents, RedisPresence};
use realtime::ClusterConfig;

/// How to reach Redis and how often to refresh.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` is not supported: no TLS feature).
    pub url: String,
    /// Prefix of every channel and key. Default `realtime`.
    pub prefix: String,
    /// How often a node refreshes its directory records. They expire after three
    /// missed refreshes, so a dead node leaves the views within 3 × this. Default 5 s.
    pub heartbeat: Duration,
    /// Longest wait for a connect or a command before the link is considered down.
    /// Default 2 s.
    pub command_timeout: Duration,
    /// Reconnect backoff: first delay, doubled on each failure up to `reconnect_max`,
    /// with jitter. Defaults 50 ms and 1 s, so delivery resumes within about a
    /// second of Redis returning.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Envelopes that may wait for the publisher; beyond it sends fail (503)
    /// rather than queue without bound. Default 65 536.
    pub outbox_capacity: usize,
    /// Bytes of envelopes that may wait for the publisher; beyond it sends fail
    /// (503) as for `outbox_capacity`. An envelope larger than this is taken only
    /// into an empty queue. Default 64 MiB.
    pub outbox_bytes: usize,
    /// Envelopes received from Redis that may wait for this node's engine. A node
    /// that falls further behind drops its subscriber link, counts the envelopes
    /// it discards (`realtime_bus_envelopes_dropped_total`), and resubscribes once
    /// it has caught up. Default 262 144.
    pub inbox_capacity: usize,
    /// Bytes of received envelopes that may wait for this node's engine, as for
    /// `inbox_capacity`. Default 64 MiB.
    pub inbox_bytes: usize,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "realtime".into(),
            heartbeat: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(1),
            outbox_capacity: 65_536,
            outbox_bytes: 64 * 1024 * 1024,
            inbox_capacity: 262_144,
            inbox_bytes: 64 * 1024 * 1024,
        }
    }

    /// How long a record outlives its node's last heartbeat.
    pub fn record_ttl(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct SetupError(#[from] redis::RedisError);

/// A bus, a directory, a history store and a presence store sharing one Redis
/// configuration.
#[derive(Clone)]
pub struct RedisCluster {
    config: RedisConfig,
    bus: Arc<RedisBus>,
    directory: Arc<RedisDirectory>,
    history: Arc<RedisHistory>,
    presence: Arc<RedisPresence>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCluster {
    /// Validates the URL. Connections are made when the engine starts the bus, and
    /// retried for as long as Redis is unreachable.
    pub fn new(config: RedisConfig) -> Result<Self, SetupError> {
        let client = redis::Client::open(config.url.as_str())?;
        // One set of metrics: the bus registers it, the directory's link reports in it.
        let metrics = metrics::BusMetrics::new();
        let bus = Arc::new(RedisBus::new(
            client.clone(),
            config.clone(),
            metrics.clone(),
        ));
        // Appends share the bus's outbox and publisher, so they keep their order
        // with the bus's publishes.
        let history = Arc::new(RedisHistory::new(
            client.clone(),
            &config,
            bus.outbox(),
            bus.publisher_link(),
            metrics.history.clone(),
        ));
        let presence = Arc::new(RedisPresence::new(
            client.clone(),
            config.clone(),
            metrics.link("presence"),
            metrics::PresenceMetrics::new(),
        ));
        Ok(RedisCluster {
            presence,
            directory: Arc::new(RedisDirectory::new(
                client,
                config.clone(),
                metrics.link("directory"),
            )),
            bus,
            history,
            config,
        })
    }

    pub fn bus(&self) -> Arc<RedisBus> {
        self.bus.clone()
    }

    pub fn directory(&self) -> Arc<RedisDirectory> {
        self.directory.clone()
    }

    /// The history store. Its appends travel through the bus's publisher, so the
    /// bus must be started (the engine does it) for them to go out.
    pub fn history(&self) -> Arc<RedisHistory> {
        self.history.clone()
    }

    /// The presence store: its own connection, started by the engine.
    pub fn presence(&self) -> Arc<RedisPresence> {
        self.presence.clone()
    }

    /// A [`ClusterConfig`] for an engine on this Redis, labelled `node_id`.
    pub fn cluster_config(&self, node_id: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            node_id: node_id.into(),
            prefix: self.config.prefix.clone(),
            bus: self.bus.clone(),
            directory: self.directory.clone(),
            history: Some(self.history.clone()),
            presence: Some(self.presence.clone()),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Waits (up to `timeout`) until the bus is connected. Returns whether it is.
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        self.bus.wait_until_up(timeout).await
    }
}
