//! The effective settings as JSON, for `--check-config`: every value a start would
//! use, with secrets replaced by `<set>` or `<generated>`.

use std::time::Duration;

use realtime_core::{HistoryLimits, PresenceMode, ProxyUse};
use serde_json::{Value, json};

use super::{Provider, Settings, TokenKey};

/// Shown instead of a configured secret.
pub const SET: &str = "<set>";
/// Shown instead of a secret development mode generated for this run.
pub const GENERATED: &str = "<generated>";

impl Settings {
    /// The settings as `--check-config` prints them. Each option's
    /// [`OptionSpec::setting`](super::OptionSpec::setting) points into this.
    pub fn effective(&self) -> Value {
        let secret = if self.development { GENERATED } else { SET };
        let (current, previous, public_key, jwks_file) = match &self.key {
            TokenKey::Secret { previous, .. } => {
                (Some(secret), previous.as_ref().map(|_| SET), None, None)
            }
            TokenKey::PublicKey(path) => (None, None, Some(path), None),
            TokenKey::Jwks(path) => (None, None, None, Some(path)),
        };
        let engine = &self.engine;
        let policy = &engine.topic_policy;
        let namespaces: Vec<Value> = policy
            .namespaces
            .iter()
            .map(|n| {
                let mut entry = json!({
                    "pattern": n.pattern().as_str(),
                    "subscribe": n.rules().subscribe,
                    "publish": n.rules().publish,
                });
                add_history(&mut entry, n.history());
                add_presence(&mut entry, n.presence());
                add_proxy(&mut entry, n.proxy());
                entry
            })
            .collect();
        let mut default_namespace = json!(policy.default);
        add_history(&mut default_namespace, policy.default_history);
        add_presence(&mut default_namespace, policy.default_presence);
        let provider = match &self.provider {
            Provider::Memory => {
                json!({"kind": "memory", "redis_url": null, "redis_prefix": null, "cluster_heartbeat": null})
            }
            Provider::Redis {
                url,
                prefix,
                heartbeat,
            } => json!({
                "kind": "redis",
                "redis_url": redact_url(url),
                "redis_prefix": prefix,
                "cluster_heartbeat": duration(*heartbeat),
            }),
        };
        json!({
            "config_file": self.config_file,
            "listen": self.listen.to_string(),
            "development": self.development,
            "allow_remote_development": self.allow_remote_development,
            "jwt": {
                "algorithm": self.algorithm.as_str(),
                "secret": current,
                "previous_secret": previous,
                "public_key": public_key,
                "jwks_file": jwks_file,
                "issuer": self.claims.issuer,
                "audience": self.claims.audience,
                "leeway": self.claims.leeway_secs,
            },
            "api_key": secret,
            "engine": {
                "max_message_size": engine.max_message_size,
                "outbound_queue": engine.outbound_queue,
                "outbound_queue_bytes": engine.outbound_queue_bytes,
                "max_topic_length": engine.max_topic_length,
                "max_subscriptions": engine.max_subscriptions,
                "max_connections_per_user": engine.max_connections_per_user,
                "command_rate": engine.command_rate.rate,
                "command_burst": engine.command_rate.burst,
                "ping_interval": duration(engine.ping_interval),
                "pong_timeout": duration(engine.pong_timeout),
                "write_timeout": duration(engine.write_timeout),
                "expiry_grace": duration(engine.expiry_grace),
                "client_publish": policy.publish.iter().map(|p| p.pattern()).collect::<Vec<_>>(),
                "namespaces": namespaces,
                "default_namespace": default_namespace,
            },
            "allowed_origins": self.allowed_origins,
            "http": {
                "header_read_timeout": duration(self.http.header_read_timeout),
                "keep_alive_timeout": duration(self.http.keep_alive_timeout),
                "upgrade_timeout": duration(self.http.upgrade_timeout),
                "request_timeout": duration(self.http.request_timeout),
                "max_connections": self.http.max_connections,
            },
            "presence": {
                "node_timeout": duration(engine.presence.lease.bound()),
                "offline_grace": duration(engine.presence.offline_grace),
                "events": engine.presence.events,
            },
            "webhooks": {
                "url": self.webhook.endpoint.as_ref().map(|e| redact_url(&e.url)),
                "secret": self.webhook.endpoint.as_ref().map(|_| SET),
                "timeout": duration(self.webhook.timeout),
                "max_attempts": self.webhook.max_attempts,
                "queue_size": engine.presence.event_queue,
            },
            "proxy": {
                "connect_url": self.proxy.connect_url.as_deref().map(redact_url),
                "connect_headers": self.proxy.connect_headers,
                "subscribe_url": self.proxy.subscribe_url.as_deref().map(redact_url),
                "publish_url": self.proxy.publish_url.as_deref().map(redact_url),
                "secret": self.proxy.secret.as_ref().map(|_| SET),
                "timeout": duration(self.proxy.timeout),
                "max_concurrency": self.proxy.max_concurrency,
            },
            "provider": provider,
            "node_id": self.node_id,
            "shutdown_timeout": duration(self.shutdown_timeout),
            "log": self.log,
            "worker_threads": self.worker_threads,
        })
    }
}

/// A namespace's history as its two TOML keys, `null` when it keeps none.
fn add_history(entry: &mut Value, history: Option<HistoryLimits>) {
    entry["history_size"] = json!(history.map(|h| h.size()));
    entry["history_ttl"] = json!(history.map(|h| duration(h.ttl())));
}

/// A namespace's presence as its two TOML keys.
fn add_presence(entry: &mut Value, presence: Option<PresenceMode>) {
    entry["presence"] = json!(presence.is_some());
    entry["join_leave"] = json!(presence.is_some_and(|p| p.join_leave));
}

/// A namespace's proxy hooks as its two TOML keys.
fn add_proxy(entry: &mut Value, proxy: ProxyUse) {
    entry["subscribe_proxy"] = json!(proxy.subscribe);
    entry["publish_proxy"] = json!(proxy.publish);
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The URL with its user and password (Redis ACL credentials, a webhook's basic
/// auth) replaced.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{SET}{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_in_a_redis_url_are_hidden() {
        assert_eq!(
            redact_url("redis://user:hunter2@redis.internal:6380/2"),
            "redis://<set>@redis.internal:6380/2"
        );
        assert_eq!(redact_url("rediss://:p%40ss@h:1"), "rediss://<set>@h:1");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("unix:///tmp/redis.sock"),
            "unix:///tmp/redis.sock"
        );
    }
}
