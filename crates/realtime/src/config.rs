//! Tunables of the engine: limits, timers and buffer sizes, with documented defaults.

use std::time::Duration;

use realtime_core::{OriginPolicy, RateLimit, Topic, TopicPolicy};

/// Engine configuration. `Default` gives the documented production defaults.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// Largest inbound WebSocket message, in bytes; larger closes with 1009. Default 64 KiB.
    pub max_message_size: usize,
    /// Outbound queue capacity per connection, in messages. A connection whose queue
    /// is full when a message arrives is closed as a slow consumer (3008). Default 1024.
    pub outbound_queue: usize,
    /// Outbound queue capacity per connection, in bytes of queued frames; past it
    /// the connection is closed as a slow consumer (3008) like a full message
    /// count. A single frame larger than this is still sent to a connection whose
    /// queue is empty. Default 1 MiB.
    pub outbound_queue_bytes: usize,
    /// Most frames the writer sends before one flush. Default 64.
    pub write_batch: usize,
    /// Interval between server pings. Default 25 s.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered (no frame of any kind) before the connection
    /// is closed with 3012. Default 10 s.
    pub pong_timeout: Duration,
    /// After the server sends a close frame, how long it waits for the client's
    /// answering close (or for a blocked write to drain) before dropping the socket.
    /// Default 2 s.
    pub close_timeout: Duration,
    /// Longest a single socket write (a batch of frames and its flush) may stay
    /// blocked on a peer that stopped reading before the connection is closed
    /// as a slow consumer (3008), even if its queue has not overflowed. The socket
    /// is then dropped without a close handshake. Default 10 s.
    pub write_timeout: Duration,
    /// Socket read buffer per connection, in bytes. Default 2 KiB: idle connections
    /// are the common case and this buffer is the largest part of their memory
    /// (clients mostly receive; a larger inbound message just takes more reads).
    pub read_buffer_size: usize,
    /// Bytes the writer buffers before writing to the socket between flushes.
    /// Default 8 KiB.
    pub write_buffer_size: usize,
    /// Longest accepted topic name, in bytes. Default 255.
    pub max_topic_length: usize,
    /// Most connections one user may hold on this node; one more is accepted and
    /// closed at once with 3504. 0 means no limit (the default).
    pub max_connections_per_user: usize,
    /// Most topics one connection may subscribe to itself; one more is refused
    /// with a `limit_exceeded` error. Server-side subscriptions (the HTTP API) are
    /// not limited. 0 means no limit. Default 1024.
    pub max_subscriptions: usize,
    /// Client commands per second per connection (token bucket). Over it a command
    /// is answered `rate_limited`; a client that keeps sending at more than about
    /// twice the rate is closed with 3013. Default 100/s, burst 200.
    /// [`RateLimit::OFF`] disables it.
    pub command_rate: RateLimit,
    /// How long past its token's `exp` a connection stays open before it is closed
    /// with 3005, unless it sent a `refresh`. The server sets it to the JWT
    /// leeway, so a token accepted within the leeway is not closed at once. Default 0.
    pub expiry_grace: Duration,
    /// Who may subscribe to and publish on which topics from a client.
    pub topic_policy: TopicPolicy,
    /// Which browser origins may open a connection (403 before the upgrade
    /// otherwise). Default: pages of the server's own host, and any upgrade
    /// without an `Origin` header (backends, native clients).
    pub origin_policy: OriginPolicy,
    /// How presence runs: the bound on a dead node's entries (10 s), the offline
    /// grace (5 s), and whether webhook events are queued (no; the server turns
    /// them on with `webhook_url`).
    pub presence: crate::presence::PresenceSettings,
    /// Backend hooks consulted at the handshake and on client subscribes and
    /// publishes (none by default). See [`crate::hooks`].
    pub hooks: crate::hooks::Hooks,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            max_message_size: 64 * 1024,
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            write_batch: 64,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            read_buffer_size: 2 * 1024,
            write_buffer_size: 8 * 1024,
            max_topic_length: Topic::MAX_LEN,
            max_connections_per_user: 0,
            max_subscriptions: 1024,
            command_rate: RateLimit {
                rate: 100.0,
                burst: 200.0,
            },
            expiry_grace: Duration::ZERO,
            topic_policy: TopicPolicy::default(),
            origin_policy: OriginPolicy::same_host(),
            presence: crate::presence::PresenceSettings::default(),
            hooks: crate::hooks::Hooks::default(),
        }
    }
}
