//! HTTP-level limits of the server: how long a client may take to send its
//! request headers, how long a request may take to be served, how long an idle
//! keep-alive connection is kept, how long a WebSocket upgrade may take, and how
//! many TCP connections are served at once.

use std::time::Duration;

/// Limits applied to every accepted TCP connection, before any request is routed.
/// A connection past one of these timeouts is closed without an answer (a late
/// handshake excepted, see `upgrade_timeout`); see docs/OPERATIONS.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest time a request head may take to arrive completely, counted from
    /// the accept for the first request and from the request's first byte for
    /// later ones on a keep-alive connection.
    pub header_read_timeout: Duration,
    /// Longest time a request may take once its head is complete: reading its
    /// body, running its handler and writing its response. Bounds a client that
    /// sends its body, or reads the answer, slowly or never.
    pub request_timeout: Duration,
    /// Longest time a keep-alive connection may sit idle between the end of a
    /// response and the first byte of the next request.
    pub keep_alive_timeout: Duration,
    /// Longest time a WebSocket handshake may take, from the start of its request
    /// (as for `header_read_timeout`) until the `101` is written and the socket is
    /// handed to its session. A head that is complete only after this time is
    /// answered `408 upgrade_timeout`; a handshake that runs out while its `101`
    /// is being written is dropped.
    pub upgrade_timeout: Duration,
    /// Most TCP connections served at once (WebSockets included); one more is
    /// answered `503 too_many_connections` and closed without being read.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(60),
            upgrade_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}
