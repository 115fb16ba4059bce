//! Server configuration: command-line flags, `REALTIME_*` environment variables and an
//! optional TOML file, resolved into [`Settings`]. A flag or variable beats the file;
//! the file beats the built-in default. The options themselves are declared once, in
//! `options.rs`; what a start would use is shown by `--check-config` (`effective.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use realtime::{JwtAlgorithm, RealtimeConfig};
use realtime_core::{ClaimRules, OriginPolicy, PublishRule};

mod effective;
mod namespaces;
mod options;
mod presence;
mod proxy;

pub use namespaces::{DefaultNamespaceOptions, NamespaceOptions};
pub use options::{OPTIONS, OptionSpec, Options, ProxyOptions};
pub use presence::{WebhookEndpoint, WebhookSettings};
pub use proxy::ProxySettings;

/// Boundary Realtime server: WebSocket connections authenticated by JWT, reached by
/// user, role, connection, broadcast or topic through an HTTP API.
///
/// With no key material and no API key configured the server starts in development
/// mode: it generates a secret and an API key and prints a ready-to-use token.
#[derive(Debug, Parser)]
#[command(name = "realtime-server", version, about, long_about)]
pub struct Cli {
    /// Resolve the configuration exactly as a start would, print the effective
    /// settings as JSON (secrets shown as "<set>") and exit: 0 when it is valid,
    /// 2 with the error otherwise.
    #[arg(long)]
    pub check_config: bool,

    #[command(flatten)]
    pub options: Options,
}

/// A configuration that cannot start a server.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    ParseFile {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// How client tokens are verified.
#[derive(Debug, Clone)]
pub enum TokenKey {
    /// HS256: the current secret and, during a rotation, the previous one.
    Secret {
        current: String,
        previous: Option<String>,
    },
    /// RS256/ES256: a PEM public key file.
    PublicKey(PathBuf),
    /// RS256/ES256: a JWKS file.
    Jwks(PathBuf),
}

/// Where the other nodes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// One node; nothing to share.
    Memory,
    /// Nodes share work through Redis pub/sub.
    Redis {
        url: String,
        prefix: String,
        heartbeat: Duration,
    },
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub algorithm: JwtAlgorithm,
    pub key: TokenKey,
    pub claims: ClaimRules,
    pub api_key: String,
    /// True when the secret and the API key were generated at start: no key
    /// material of any kind was configured.
    pub development: bool,
    pub engine: RealtimeConfig,
    pub shutdown_timeout: Duration,
    pub log: String,
    /// Runtime worker threads; `None` means one per CPU.
    pub worker_threads: Option<usize>,
    pub provider: Provider,
    pub node_id: String,
    /// Header, keep-alive and upgrade timeouts and the connection cap.
    pub http: crate::limits::HttpLimits,
    /// Development mode may listen on a non-loopback address.
    pub allow_remote_development: bool,
    /// The configured origins, as given: the engine's `OriginPolicy` keeps them
    /// normalized and private, and `--check-config` reports them.
    pub allowed_origins: Vec<String>,
    /// The TOML file the settings were read from, if any.
    pub config_file: Option<PathBuf>,
    /// Where presence events are POSTed, if anywhere (the engine's
    /// `presence.events` is on exactly when an endpoint is set).
    pub webhook: WebhookSettings,
    /// The backend proxy hooks, if any (`app.rs` turns them into the engine's
    /// `hooks`).
    pub proxy: ProxySettings,
}

impl Options {
    /// Reads the TOML file named by `--config`, if any, and fills every option the
    /// command line and environment left unset.
    pub fn merge_file(mut self) -> Result<Options, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_file(&path)?;
        self.fill_from(file);
        Ok(self)
    }

    /// Resolves defaults and checks consistency. `generate` supplies random secrets
    /// for development mode.
    pub fn resolve(self, generate: impl Fn() -> String) -> Result<Settings, ConfigError> {
        let public = match (self.jwt_public_key, self.jwt_jwks_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either REALTIME_JWT_PUBLIC_KEY or REALTIME_JWT_JWKS_FILE, not both"
                        .into(),
                ));
            }
            (Some(pem), None) => Some(TokenKey::PublicKey(pem)),
            (None, Some(jwks)) => Some(TokenKey::Jwks(jwks)),
            (None, None) => None,
        };
        let algorithm = match (&self.jwt_algorithm, &public) {
            (Some(a), _) => a.parse::<JwtAlgorithm>().map_err(ConfigError::Invalid)?,
            (None, Some(_)) => JwtAlgorithm::Rs256,
            (None, None) => JwtAlgorithm::Hs256,
        };
        // Development mode hands out a generated secret and API key, so any key
        // material at all, from any source, means an operator meant production.
        let configured: Vec<&str> = [
            (self.jwt_secret.is_some(), "REALTIME_JWT_SECRET"),
            (
                self.jwt_previous_secret.is_some(),
                "REALTIME_JWT_PREVIOUS_SECRET",
            ),
            (public.is_some(), "a public key"),
            (self.api_key.is_some(), "REALTIME_API_KEY"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let development = configured.is_empty();
        let previous = self.jwt_previous_secret.filter(|p| !p.is_empty());
        if previous.is_some() && (algorithm != JwtAlgorithm::Hs256 || self.jwt_secret.is_none()) {
            return Err(ConfigError::Invalid(
                "REALTIME_JWT_PREVIOUS_SECRET needs REALTIME_JWT_SECRET (HS256)".into(),
            ));
        }
        let key = match (algorithm, self.jwt_secret, public) {
            (JwtAlgorithm::Hs256, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either REALTIME_JWT_SECRET (HS256) or a public key (RS256/ES256), not both".into(),
                ));
            }
            (JwtAlgorithm::Hs256, Some(secret), None) if secret.is_empty() => {
                return Err(ConfigError::Invalid("REALTIME_JWT_SECRET is empty".into()));
            }
            (JwtAlgorithm::Hs256, Some(current), None) => TokenKey::Secret { current, previous },
            (JwtAlgorithm::Hs256, None, None) if development => TokenKey::Secret {
                current: generate(),
                previous: None,
            },
            (JwtAlgorithm::Hs256, None, None) => {
                return Err(ConfigError::Invalid(format!(
                    "no token key is configured, but {} is: give REALTIME_JWT_SECRET (HS256), \
                     REALTIME_JWT_PUBLIC_KEY or REALTIME_JWT_JWKS_FILE (RS256/ES256). \
                     Development mode, which generates the secret and the API key, starts only \
                     when none of these and no REALTIME_API_KEY is set",
                    configured.join(" and ")
                )));
            }
            (JwtAlgorithm::Hs256, None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "HS256 uses REALTIME_JWT_SECRET, not a public key; set REALTIME_JWT_ALGORITHM to RS256 or ES256".into(),
                ));
            }
            (_, _, Some(public)) => public,
            (alg, _, None) => {
                return Err(ConfigError::Invalid(format!(
                    "{} needs REALTIME_JWT_PUBLIC_KEY (a PEM public key file) or REALTIME_JWT_JWKS_FILE",
                    alg.as_str()
                )));
            }
        };
        let api_key = match self.api_key {
            Some(k) if k.is_empty() => {
                return Err(ConfigError::Invalid("REALTIME_API_KEY is empty".into()));
            }
            Some(k) => k,
            None if development => generate(),
            None => {
                return Err(ConfigError::Invalid(
                    "REALTIME_API_KEY is required when a JWT key is configured (production mode)"
                        .into(),
                ));
            }
        };
        let mut engine = RealtimeConfig::default();
        if let Some(n) = self.max_message_size {
            engine.max_message_size = n;
        }
        if let Some(n) = self.outbound_queue {
            engine.outbound_queue = n.max(1);
        }
        if let Some(n) = self.outbound_queue_bytes {
            engine.outbound_queue_bytes = n.max(1);
        }
        if let Some(d) = self.ping_interval {
            engine.ping_interval = d;
        }
        if let Some(d) = self.pong_timeout {
            engine.pong_timeout = d;
        }
        if let Some(n) = self.max_connections_per_user {
            engine.max_connections_per_user = n;
        }
        if let Some(n) = self.max_subscriptions {
            engine.max_subscriptions = n;
        }
        if let Some(n) = self.max_topic_length {
            if n == 0 || n > realtime_core::Topic::MAX_LEN {
                return Err(ConfigError::Invalid(format!(
                    "max topic length must be 1 to {}",
                    realtime_core::Topic::MAX_LEN
                )));
            }
            engine.max_topic_length = n;
        }
        let rate = self.command_rate.unwrap_or(engine.command_rate.rate);
        let burst = self.command_burst.unwrap_or(2.0 * rate);
        if !rate.is_finite() || rate < 0.0 || !burst.is_finite() || burst < 0.0 {
            return Err(ConfigError::Invalid(
                "command rate and burst must be zero or positive numbers".into(),
            ));
        }
        engine.command_rate = realtime_core::RateLimit { rate, burst };
        engine.expiry_grace = Duration::from_secs(self.jwt_leeway.unwrap_or(0));
        if let Some(d) = self.write_timeout {
            engine.write_timeout = d;
        }
        if engine.ping_interval.is_zero() || engine.pong_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ping interval and pong timeout must be above zero".into(),
            ));
        }
        if engine.write_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "REALTIME_WRITE_TIMEOUT must be above zero".into(),
            ));
        }
        let http = http_limits(
            [
                self.header_read_timeout,
                self.keep_alive_timeout,
                self.upgrade_timeout,
                self.request_timeout,
            ],
            self.max_connections,
        )?;
        engine.origin_policy =
            OriginPolicy::allow(&self.allowed_origins).with_localhost(development);
        engine.topic_policy = namespaces::topic_policy(self.namespaces, self.default_namespace)
            .map_err(|e| ConfigError::Invalid(format!("topic policy: {e}")))?;
        let proxy = proxy::proxy_settings(self.proxy).map_err(ConfigError::Invalid)?;
        proxy::check_namespaces(&engine.topic_policy, &proxy).map_err(ConfigError::Invalid)?;
        let webhook = presence::webhook_settings(presence::WebhookOptions {
            url: self.webhook_url,
            secret: self.webhook_secret,
            timeout: self.webhook_timeout,
            max_attempts: self.webhook_max_attempts,
        })
        .map_err(ConfigError::Invalid)?;
        engine.presence = presence::presence_settings(presence::PresenceOptions {
            node_timeout: self.presence_node_timeout,
            offline_grace: self.presence_offline_grace,
            queue_size: self.webhook_queue_size,
            events: webhook.endpoint.is_some(),
        })
        .map_err(ConfigError::Invalid)?;
        engine.topic_policy.publish = self
            .client_publish
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(PublishRule::new)
            .collect();
        let provider = match self
            .provider
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("memory") => Provider::Memory,
            Some("redis") => Provider::Redis {
                url: self
                    .redis_url
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
                prefix: self.redis_prefix.unwrap_or_else(|| "realtime".into()),
                heartbeat: self.cluster_heartbeat.unwrap_or(Duration::from_secs(5)),
            },
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "unknown provider {other:?}: use `memory` or `redis`"
                )));
            }
        };
        if let Provider::Redis {
            heartbeat, prefix, ..
        } = &provider
        {
            if heartbeat.is_zero() {
                return Err(ConfigError::Invalid(
                    "cluster heartbeat must be above zero".into(),
                ));
            }
            if prefix.is_empty() {
                return Err(ConfigError::Invalid(
                    "REALTIME_REDIS_PREFIX is empty".into(),
                ));
            }
        }
        let node_id = self
            .node_id
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("node-{}", generate().chars().take(12).collect::<String>()));
        let listen = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let allow_remote_development = self.allow_remote_development.unwrap_or(false);
        if development && !listen.ip().is_loopback() && !allow_remote_development {
            return Err(ConfigError::Invalid(format!(
                "development mode listens only on a loopback address, and {listen} is not: \
                 anyone who can reach it could fetch tokens and the API key from /dev/token. \
                 Configure a key (REALTIME_JWT_SECRET and REALTIME_API_KEY), or set \
                 REALTIME_ALLOW_REMOTE_DEVELOPMENT=true to accept that"
            )));
        }
        Ok(Settings {
            webhook,
            proxy,
            http,
            provider,
            node_id,
            listen,
            allow_remote_development,
            allowed_origins: self.allowed_origins,
            config_file: self.config,
            algorithm,
            key,
            claims: ClaimRules {
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
                leeway_secs: self.jwt_leeway.unwrap_or(0),
            },
            api_key,
            development,
            engine,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
            log: self.log.unwrap_or_else(|| "info".into()),
            worker_threads: self.worker_threads.filter(|n| *n > 0),
        })
    }
}

/// The HTTP limits, each checked: a zero timeout or connection cap would refuse
/// every request.
fn http_limits(
    [header_read, keep_alive, upgrade, request]: [Option<Duration>; 4],
    max_connections: Option<usize>,
) -> Result<crate::limits::HttpLimits, ConfigError> {
    let mut http = crate::limits::HttpLimits::default();
    for (value, target, name) in [
        (
            header_read,
            &mut http.header_read_timeout,
            "REALTIME_HEADER_READ_TIMEOUT",
        ),
        (
            keep_alive,
            &mut http.keep_alive_timeout,
            "REALTIME_KEEP_ALIVE_TIMEOUT",
        ),
        (
            upgrade,
            &mut http.upgrade_timeout,
            "REALTIME_UPGRADE_TIMEOUT",
        ),
        (
            request,
            &mut http.request_timeout,
            "REALTIME_REQUEST_TIMEOUT",
        ),
    ] {
        if let Some(d) = value {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("{name} must be above zero")));
            }
            *target = d;
        }
    }
    if let Some(n) = max_connections {
        if n == 0 {
            return Err(ConfigError::Invalid(
                "REALTIME_MAX_CONNECTIONS must be at least 1".into(),
            ));
        }
        http.max_connections = n;
    }
    Ok(http)
}

fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
