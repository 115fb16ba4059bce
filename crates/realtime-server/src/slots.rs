//! The cap on concurrent TCP connections (`max_connections`, WebSockets and SSE
//! streams included): a slot per served connection, held until its socket
//! closes, and the refusal of the connections over the cap, with their metrics.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::http_error;

/// How long a refused connection is kept to deliver its 503 and read what the
/// client sent: closing a socket with unread input resets it, and a reset can
/// discard the 503 before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Most bytes read from a refused connection before it is dropped anyway.
const REFUSAL_DRAIN: usize = 64 * 1024;

/// Most refused connections being answered at once. Beyond it a refused
/// connection is closed without its 503, so a flood of connections over the cap
/// holds at most this many file descriptors more than the cap itself.
const REFUSALS_AT_ONCE: usize = 256;

/// The connection slots of one server.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    free: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
    open_count: watch::Sender<usize>,
}

/// One served connection's place under the cap; dropping it frees the place.
/// Every open WebSocket holds one, so it is kept small.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Inner>,
}

impl ConnectionSlots {
    pub fn new(max_connections: usize) -> ConnectionSlots {
        let inner = Inner {
            free: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            refusing: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            open: Gauge::default(),
            refused: Counter::default(),
            open_count: watch::channel(0).0,
        };
        ConnectionSlots {
            inner: Arc::new(inner),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_http_connections",
            "Open TCP connections (HTTP and WebSocket)",
            self.inner.open.clone(),
        );
        registry.register(
            "realtime_http_connections_refused",
            "TCP connections refused with 503 because max_connections were open",
            self.inner.refused.clone(),
        );
    }

    /// A slot for a new connection, or `None` at the cap.
    pub(crate) fn take(&self) -> Option<Slot> {
        let permit = self.inner.free.clone().try_acquire_owned().ok()?;
        self.inner.open.inc();
        self.inner.open_count.send_modify(|n| *n += 1);
        Some(Slot {
            _permit: permit,
            slots: self.inner.clone(),
        })
    }

    /// The number of open connections, as it changes.
    pub fn watch_open(&self) -> watch::Receiver<usize> {
        self.inner.open_count.subscribe()
    }

    /// Answers a connection over the cap with `503 too_many_connections` and
    /// closes it, without reading its request (in its own task).
    pub(crate) fn refuse(&self, mut tcp: TcpStream) {
        self.inner.refused.inc();
        let Ok(answering) = self.inner.refusing.clone().try_acquire_owned() else {
            tracing::debug!("closing a connection: max_connections reached, refusals busy");
            return;
        };
        tracing::debug!("refusing a connection: max_connections reached");
        tokio::spawn(async move {
            let answer = async {
                tcp.write_all(&http_error::too_many_connections()).await?;
                tcp.shutdown().await?;
                let mut sink = [0u8; 4096];
                let mut drained = 0;
                while drained < REFUSAL_DRAIN {
                    match tcp.read(&mut sink).await? {
                        0 => break,
                        n => drained += n,
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
            drop(answering);
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.dec();
        self.slots.open_count.send_modify(|n| *n -= 1);
    }
}
