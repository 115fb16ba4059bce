//! HTTP-level limits of the server: how long a client may take to send its
//! request headers, how long an idle keep-alive connection is kept, how long a
//! WebSocket upgrade may take, and how many TCP connections are served at once.

use std::time::Duration;

/// Limits applied to every accepted TCP connection, before any request is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest time from accepting a connection (or from the end of the previous
    /// request on a keep-alive connection) until its request headers are complete.
    pub header_read_timeout: Duration,
    /// Longest time an idle keep-alive connection is kept open between requests.
    pub keep_alive_timeout: Duration,
    /// Longest time a WebSocket upgrade may take, from the start of the request
    /// until the connection is ready to serve (welcome sent).
    pub upgrade_timeout: Duration,
    /// Most TCP connections served at once (WebSockets included); one more is
    /// answered 503 with a JSON body and closed.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            upgrade_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}
