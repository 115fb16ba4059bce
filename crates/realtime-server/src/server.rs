//! Running the server: bind, serve, and shut down gracefully on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use realtime::Realtime;
use tokio::net::TcpListener;

use crate::app::{self, AppError};
use crate::config::Settings;

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
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Server {
            realtime: app.realtime,
            listener,
            router: app.router,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// Serves until `shutdown` resolves, then: stop accepting, tell every connection
    /// (`server-shutdown`, then close 1001), and return within the configured
    /// shutdown timeout. Returns whether every connection closed in time.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> bool {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Frames are small and latency matters more than packet count: no Nagle delay.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, self.router).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        let serving = tokio::spawn(async move { serve.await });
        shutdown.await;
        tracing::info!("shutting down: closing connections");
        let _ = stop_tx.send(());
        let timeout = self.settings.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let clean = self.realtime.shutdown(timeout).await;
        // Plain HTTP requests in flight get what is left of the budget.
        let _ = tokio::time::timeout_at(deadline, serving).await;
        tracing::info!(clean, "shutdown complete");
        clean
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
