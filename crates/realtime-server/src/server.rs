//! Running the server: bind, serve, and shut down gracefully on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use realtime::Realtime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::app::{self, AppError};
use crate::config::Settings;
use crate::connection;
use crate::limits::HttpLimits;
use crate::slots::ConnectionSlots;
use crate::webhooks::WebhookSender;

/// The server failed to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound server, ready to serve.
pub struct Server {
    pub realtime: Realtime,
    listener: TcpListener,
    router: axum::Router,
    slots: ConnectionSlots,
    webhooks: Option<WebhookSender>,
    settings: Settings,
}

impl Server {
    /// Builds the app and binds the listening socket.
    pub async fn bind(settings: Settings) -> Result<Server, StartError> {
        let app = app::build(&settings)?;
        if let Some(redis) = &app.redis {
            // Start serving either way: while Redis is unreachable /health says
            // `degraded` and the bus keeps reconnecting.
            if !redis.wait_until_up(Duration::from_secs(3)).await {
                tracing::warn!(reason = ?app.realtime.bus_status(), "starting before Redis is reachable");
            }
        }
        let listener = listen(settings.listen).map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        Ok(Server {
            realtime: app.realtime,
            listener,
            router: app.router,
            slots: app.slots,
            webhooks: app.webhooks,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// The number of open TCP connections (HTTP and WebSocket), as it changes.
    pub fn watch_open_connections(&self) -> watch::Receiver<usize> {
        self.slots.watch_open()
    }

    /// Serves until `shutdown` resolves, then: stop accepting, tell every connection
    /// (`server-shutdown`, then close 1001), stop the webhook sender, and return
    /// within the configured shutdown timeout. Returns whether every connection
    /// closed (and every webhook attempt in flight ended) in time.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> bool {
        let (stop_tx, stop_rx) = watch::channel(false);
        let serving = tokio::spawn(accept(
            self.listener,
            self.router,
            self.slots,
            self.settings.http.clone(),
            stop_rx,
        ));
        shutdown.await;
        tracing::info!("shutting down: closing connections");
        let _ = stop_tx.send(true);
        let timeout = self.settings.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut clean = self.realtime.shutdown(timeout).await;
        // Plain HTTP requests in flight get what is left of the budget; what they
        // sent to other nodes is drained in it too.
        let _ = tokio::time::timeout_at(deadline, serving).await;
        clean &= self.realtime.drain_relay(deadline).await;
        // Attempts in flight get what is left; undelivered events stay queued.
        if let Some(webhooks) = self.webhooks {
            clean &= webhooks.stop(deadline).await;
        }
        tracing::info!(clean, "shutdown complete");
        clean
    }
}

/// Accepts connections until `stop`, each served in its own task under the
/// connection cap; then waits for the HTTP connections still being served.
/// Upgraded WebSockets are the engine's to close.
async fn accept(
    listener: TcpListener,
    router: axum::Router,
    slots: ConnectionSlots,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let connections = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tracing::trace!(%peer, "connection accepted");
                    tcp
                }
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = connection::stopped(&mut stop) => break,
        };
        // Frames are small and latency matters more than packet count: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match slots.take() {
            Some(slot) => {
                connections.spawn(connection::serve(
                    tcp,
                    slot,
                    router.clone(),
                    limits.clone(),
                    stop.clone(),
                ));
            }
            None => slots.refuse(tcp),
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A failed accept: a connection that died in the backlog is skipped; anything
/// else (out of file descriptors) is logged and retried after a pause, so the
/// loop does not spin while the process cannot take connections.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Resolves on SIGINT or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first
/// polled: call it before the server announces its address, so a signal sent as
/// soon as the server is reachable is a graceful shutdown, never the default
/// action (the process killed mid-connection, clients reset without a close).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; stopping on Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Connections the kernel may hold for the server before it accepts them (capped
/// by `net.core.somaxconn`). The standard library's 128 drops most of a reconnect
/// storm: a thousand clients coming back at once after a blip would wait a
/// second for their SYN to be retried.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket as `TcpListener::bind` does (with `SO_REUSEADDR`),
/// with a backlog sized for reconnect storms.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
