//! The state of one Redis connection ("link"): up or down with a reason, logged
//! once per outage rather than once per failed attempt or message.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::watch;

use crate::metrics::LinkGauges;

pub(crate) struct Link {
    name: &'static str,
    state: watch::Sender<bool>,
    detail: Mutex<Detail>,
    gauges: LinkGauges,
}

struct Detail {
    reason: String,
    down_since: Option<Instant>,
    ever_up: bool,
}

impl Link {
    /// A link whose state and reconnects are also reported through `gauges`.
    pub(crate) fn with_gauges(name: &'static str, gauges: LinkGauges) -> Self {
        Link {
            gauges,
            name,
            state: watch::Sender::new(false),
            detail: Mutex::new(Detail {
                reason: format!("redis {name}: connecting"),
                down_since: Some(Instant::now()),
                ever_up: false,
            }),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.state.borrow()
    }

    pub(crate) fn reason(&self) -> String {
        self.detail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reason
            .clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    pub(crate) fn mark_up(&self) {
        let mut d = self.detail.lock().unwrap_or_else(|p| p.into_inner());
        let outage = d.down_since.take();
        let was_up = std::mem::replace(&mut d.ever_up, true);
        d.reason.clear();
        // Metrics, then the state, then the log line: whoever sees the state or
        // reads the line (an operator, a test) finds the counts that go with it.
        let restored = was_up && outage.is_some();
        if restored {
            self.gauges.reconnects.inc();
        }
        self.gauges.up.set(1);
        self.state.send_replace(true);
        match outage {
            Some(since) if restored => {
                tracing::info!(link = self.name, outage = ?since.elapsed(), "redis link restored");
            }
            Some(_) => tracing::info!(link = self.name, "redis link connected"),
            None => {}
        }
    }

    /// Records a failure. Only the first failure of an outage is logged as a warning.
    pub(crate) fn mark_down(&self, error: &dyn std::fmt::Display) {
        let mut d = self.detail.lock().unwrap_or_else(|p| p.into_inner());
        d.reason = format!("redis {}: {error}", self.name);
        let first = d.down_since.is_none();
        if first {
            d.down_since = Some(Instant::now());
        }
        self.gauges.up.set(0);
        self.state.send_replace(false);
        if first {
            tracing::warn!(link = self.name, %error, "redis link down; reconnecting");
        } else {
            tracing::debug!(link = self.name, %error, "redis reconnect attempt failed");
        }
    }
}

/// A multiplexed command connection with connect and response timeouts.
pub(crate) async fn connect(
    client: &Client,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}
