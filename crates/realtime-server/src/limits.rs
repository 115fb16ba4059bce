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
    /// sends its body, or reads the answer, slowly or never. An SSE stream's
    /// response is not bounded by it once its head is ready: the engine's
    /// heartbeat, token expiry and write timeout bound the stream instead.
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
    /// Most TCP connections served at once (WebSockets and SSE streams included);
    /// one more is answered `503 too_many_connections` and closed without being
    /// read.
    /// Default: what the process's open-files limit leaves after a reserve, see
    /// [`connections_for_open_files`].
    pub max_connections: usize,
}

/// Descriptors kept for everything that is not a client connection: the
/// listener, Redis links, logs, and the up to 256 refusals being answered.
const RESERVED_FILES: u64 = 512;

/// The connection cap that fits an open-files limit: the limit less
/// [`RESERVED_FILES`], and never less than half the limit, so a cap reached
/// refuses with a 503 before `accept` itself fails for lack of descriptors.
pub fn connections_for_open_files(limit: u64) -> usize {
    let cap = limit.saturating_sub(RESERVED_FILES).max(limit / 2).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The soft open-files limit of this process (`ulimit -n`); where it cannot be
/// read, the common default of 1024.
fn open_files_limit() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, _hard)) if soft != rlimit::INFINITY => soft,
        // Unlimited: a million, far above what one process serves.
        Ok(_) => 1 << 20,
        Err(_) => 1024,
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(60),
            upgrade_timeout: Duration::from_secs(10),
            max_connections: connections_for_open_files(open_files_limit()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(connections_for_open_files(20_000), 19_488);
        assert_eq!(connections_for_open_files(65_536), 65_024);
        // Small limits keep half of them for connections.
        assert_eq!(connections_for_open_files(1024), 512);
        assert_eq!(connections_for_open_files(256), 128);
        assert_eq!(connections_for_open_files(1), 1);
        assert_eq!(connections_for_open_files(0), 1);
    }

    #[test]
    fn the_default_cap_follows_this_process_limit() {
        let soft = rlimit::Resource::NOFILE.get().unwrap().0;
        assert_eq!(
            HttpLimits::default().max_connections,
            connections_for_open_files(soft)
        );
    }
}
