//! The backend proxy hooks: the engine's connect, subscribe and publish hooks
//! implemented as signed HTTP calls to the application's endpoints
//! (`connect_proxy_url`, `subscribe_proxy_url`, `publish_proxy_url`), each
//! bounded in time and concurrency and refusing whenever the backend gives no
//! decision.

mod client;
mod connect;
mod metrics;
mod publish;
mod reply;
mod subscribe;

use std::sync::Arc;

use realtime::hooks::Hooks;

pub use client::{ABANDON_AFTER, MAX_ANSWER, UNAVAILABLE};
pub use connect::ConnectProxy;
pub use metrics::{Hook, Outcome, ProxyMetrics};
pub use publish::PublishProxy;
pub use subscribe::SubscribeProxy;

use crate::config::ProxySettings;
use crate::outbound;
use client::{ProxyClient, Shared};

/// The hooks `settings` configure (none without URLs), counting into `metrics`.
/// `max_topic_length` checks the connect proxy's server-side topics.
pub fn hooks(
    settings: &ProxySettings,
    max_topic_length: usize,
    metrics: ProxyMetrics,
) -> Result<Hooks, String> {
    if !settings.any() {
        return Ok(Hooks::default());
    }
    let shared = Shared {
        // A caller waits `timeout`; the exchange it gave up on may go on (in its
        // slot) until this.
        http: outbound::client(settings.timeout * client::ABANDON_AFTER)?,
        secret: settings.secret.clone().unwrap_or_default().into_bytes(),
        timeout: settings.timeout,
        max_concurrency: settings.max_concurrency,
        metrics,
    };
    let client = |hook, url: &str| ProxyClient::new(hook, url, &shared);
    let mut hooks = Hooks::default();
    if let Some(url) = &settings.connect_url {
        hooks.connect = Some(Arc::new(ConnectProxy::new(
            client(Hook::Connect, url)?,
            &settings.connect_headers,
            max_topic_length,
        )));
    }
    if let Some(url) = &settings.subscribe_url {
        hooks.subscribe = Some(Arc::new(SubscribeProxy::new(client(Hook::Subscribe, url)?)));
    }
    if let Some(url) = &settings.publish_url {
        hooks.publish = Some(Arc::new(PublishProxy::new(client(Hook::Publish, url)?)));
    }
    Ok(hooks)
}
