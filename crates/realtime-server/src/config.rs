//! Server configuration: command-line flags, `REALTIME_*` environment variables and an
//! optional TOML file, resolved into [`Settings`]. A flag or variable beats the file;
//! the file beats the built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use realtime::{JwtAlgorithm, RealtimeConfig};
use realtime_core::{ClaimRules, OriginPolicy, PublishRule, TopicPolicy};
use serde::Deserialize;

/// Boundary Realtime server: WebSocket connections authenticated by JWT, reached by
/// user, role, connection, broadcast or topic through an HTTP API.
///
/// With no JWT secret or public key configured the server starts in development
/// mode: it generates a secret and an API key and prints a ready-to-use token.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "realtime-server", version, about, long_about)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Address to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "REALTIME_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// TOML file with any of these options (keys are the long flag names with `_`
    /// for `-`, e.g. `jwt_secret`). Flags and environment variables override it.
    #[arg(long, env = "REALTIME_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// HS256 shared secret for client tokens. Unset (with no public key): development mode.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Token algorithm, pinned: HS256, RS256 or ES256; any other `alg` (`none`
    /// included) is rejected. [default: HS256, or RS256 when a public key is given]
    #[arg(long, env = "REALTIME_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,

    /// Path to the PEM public key for RS256 or ES256 tokens.
    #[arg(long, env = "REALTIME_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "REALTIME_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim member, when set.
    #[arg(long, env = "REALTIME_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on exp/nbf/iat, in seconds. [default: 0]
    #[arg(long, env = "REALTIME_JWT_LEEWAY")]
    pub jwt_leeway: Option<u64>,

    /// Key backends send as `Authorization: Bearer <key>` on /api calls. Required
    /// outside development mode.
    #[arg(long, env = "REALTIME_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Largest inbound WebSocket message in bytes; larger closes with 1009. [default: 65536]
    #[arg(long, env = "REALTIME_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,

    /// Outbound queue per connection, in messages; overflow closes it with 3008. [default: 1024]
    #[arg(long, env = "REALTIME_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,

    /// Interval between server pings, e.g. `25s`, `500ms`. [default: 25s]
    #[arg(long, env = "REALTIME_PING_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_opt")]
    pub ping_interval: Option<Duration>,

    /// How long a ping may go unanswered before closing with 3012. [default: 10s]
    #[arg(long, env = "REALTIME_PONG_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_opt")]
    pub pong_timeout: Option<Duration>,

    /// Longest graceful shutdown before the process exits anyway. [default: 10s]
    #[arg(long, env = "REALTIME_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_opt")]
    pub shutdown_timeout: Option<Duration>,

    /// Topic patterns clients may publish on, comma-separated: `chat:lobby` (exact)
    /// or `chat:*` (prefix). [default: none]
    #[arg(long, env = "REALTIME_CLIENT_PUBLISH", value_delimiter = ',')]
    #[serde(default)]
    pub client_publish: Vec<String>,

    /// Browser origins that may open connections, comma-separated, e.g.
    /// `https://app.example.com`; `*` allows every origin. Upgrades without an
    /// `Origin` header are always allowed. [default: the server's own host only;
    /// development mode also allows localhost]
    #[arg(long, env = "REALTIME_ALLOWED_ORIGINS", value_delimiter = ',')]
    #[serde(default)]
    pub allowed_origins: Vec<String>,

    /// Where connections of other nodes are reached: `memory` (a single node, no
    /// dependencies) or `redis` (several nodes sharing one Redis). [default: memory]
    #[arg(long, env = "REALTIME_PROVIDER")]
    pub provider: Option<String>,

    /// Redis URL for the `redis` provider. [default: redis://127.0.0.1:6379]
    #[arg(long, env = "REALTIME_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis channel and key, so deployments can share one Redis.
    /// [default: realtime]
    #[arg(long, env = "REALTIME_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,

    /// This node's name in cluster views. [default: node-<random>]
    #[arg(long, env = "REALTIME_NODE_ID")]
    pub node_id: Option<String>,

    /// How often a node refreshes its cluster records; a node that dies leaves the
    /// cluster views within three of these. [default: 5s]
    #[arg(long, env = "REALTIME_CLUSTER_HEARTBEAT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_opt")]
    pub cluster_heartbeat: Option<Duration>,

    /// Log filter in `tracing` syntax, e.g. `info` or `realtime=debug`. [default: info]
    #[arg(long, env = "REALTIME_LOG")]
    pub log: Option<String>,

    /// Bytes of frames queued per connection before it is a slow consumer (3008),
    /// on top of the message count. [default: 1048576]
    #[arg(long, env = "REALTIME_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,

    /// Runtime worker threads. [default: one per CPU]
    #[arg(long, env = "REALTIME_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
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
    Secret(String),
    PublicKey(PathBuf),
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
    /// True when the secret (and API key, if not given) were generated at start.
    pub development: bool,
    pub engine: RealtimeConfig,
    pub shutdown_timeout: Duration,
    pub log: String,
    /// Runtime worker threads; `None` means one per CPU.
    pub worker_threads: Option<usize>,
    pub provider: Provider,
    pub node_id: String,
}

impl Options {
    /// Reads the TOML file named by `--config`, if any, and fills every option the
    /// command line and environment left unset.
    pub fn merge_file(mut self) -> Result<Options, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_file(&path)?;
        macro_rules! fill {
            ($($field:ident),*) => { $( if self.$field.is_none() { self.$field = file.$field; } )* };
        }
        fill!(
            listen,
            jwt_secret,
            jwt_algorithm,
            jwt_public_key,
            jwt_issuer,
            jwt_audience,
            jwt_leeway,
            api_key,
            max_message_size,
            outbound_queue,
            ping_interval,
            pong_timeout,
            shutdown_timeout,
            log,
            outbound_queue_bytes,
            worker_threads
        );
        if self.allowed_origins.is_empty() {
            self.allowed_origins = file.allowed_origins;
        }
        if self.client_publish.is_empty() {
            self.client_publish = file.client_publish;
        }
        Ok(self)
    }

    /// Resolves defaults and checks consistency. `generate` supplies random secrets
    /// for development mode.
    pub fn resolve(self, generate: impl Fn() -> String) -> Result<Settings, ConfigError> {
        let algorithm = match (&self.jwt_algorithm, &self.jwt_public_key) {
            (Some(a), _) => a.parse::<JwtAlgorithm>().map_err(ConfigError::Invalid)?,
            (None, Some(_)) => JwtAlgorithm::Rs256,
            (None, None) => JwtAlgorithm::Hs256,
        };
        let (key, development) = match (algorithm, self.jwt_secret, self.jwt_public_key) {
            (JwtAlgorithm::Hs256, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either REALTIME_JWT_SECRET (HS256) or REALTIME_JWT_PUBLIC_KEY (RS256/ES256), not both".into(),
                ));
            }
            (JwtAlgorithm::Hs256, Some(secret), None) if secret.is_empty() => {
                return Err(ConfigError::Invalid("REALTIME_JWT_SECRET is empty".into()));
            }
            (JwtAlgorithm::Hs256, Some(secret), None) => (TokenKey::Secret(secret), false),
            (JwtAlgorithm::Hs256, None, None) => (TokenKey::Secret(generate()), true),
            (JwtAlgorithm::Hs256, None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "HS256 uses REALTIME_JWT_SECRET, not a public key; set REALTIME_JWT_ALGORITHM to RS256 or ES256".into(),
                ));
            }
            (_, _, Some(path)) => (TokenKey::PublicKey(path), false),
            (alg, _, None) => {
                return Err(ConfigError::Invalid(format!(
                    "{} needs REALTIME_JWT_PUBLIC_KEY (a PEM public key file)",
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
        if engine.ping_interval.is_zero() || engine.pong_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ping interval and pong timeout must be above zero".into(),
            ));
        }
        engine.origin_policy =
            OriginPolicy::allow(&self.allowed_origins).with_localhost(development);
        engine.topic_policy = TopicPolicy {
            publish: self
                .client_publish
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(PublishRule::new)
                .collect(),
        };
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
        Ok(Settings {
            provider,
            node_id,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
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

/// `Option<Duration>` in TOML as a humantime string such as `"25s"`.
mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> String {
        "generated-0123456789".into()
    }

    #[test]
    fn no_configuration_is_development_mode() {
        let s = Options::default().resolve(generated).unwrap();
        assert!(s.development);
        assert_eq!(s.api_key, generated());
        assert_eq!(s.node_id, "node-generated-01");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.algorithm, JwtAlgorithm::Hs256);
    }

    #[test]
    fn provider_defaults_to_memory_and_redis_has_defaults() {
        let s = Options::default().resolve(generated).unwrap();
        assert_eq!(s.provider, Provider::Memory);
        let o = Options {
            provider: Some("Redis".into()),
            ..Default::default()
        };
        let s = o.resolve(generated).unwrap();
        assert_eq!(
            s.provider,
            Provider::Redis {
                url: "redis://127.0.0.1:6379".into(),
                prefix: "realtime".into(),
                heartbeat: Duration::from_secs(5)
            }
        );
        let o = Options {
            provider: Some("nats".into()),
            ..Default::default()
        };
        assert!(o.resolve(generated).is_err());
    }

    #[test]
    fn queue_bytes_and_worker_threads_reach_the_settings() {
        let s = Options::default().resolve(generated).unwrap();
        assert_eq!(s.worker_threads, None);
        assert_eq!(s.engine.outbound_queue_bytes, 1024 * 1024);
        let o = Options {
            worker_threads: Some(1),
            outbound_queue_bytes: Some(4096),
            ..Default::default()
        };
        let s = o.resolve(generated).unwrap();
        assert_eq!(s.worker_threads, Some(1));
        assert_eq!(s.engine.outbound_queue_bytes, 4096);
        let zero = Options {
            worker_threads: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.resolve(generated).unwrap().worker_threads, None);
    }

    #[test]
    fn production_requires_an_api_key() {
        let o = Options {
            jwt_secret: Some("s".into()),
            ..Default::default()
        };
        assert!(matches!(o.resolve(generated), Err(ConfigError::Invalid(_))));
        let o = Options {
            jwt_secret: Some("s".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        let s = o.resolve(generated).unwrap();
        assert!(!s.development);
    }

    #[test]
    fn public_key_algorithms_need_a_key_file() {
        let o = Options {
            jwt_algorithm: Some("RS256".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        assert!(o.resolve(generated).is_err());
        let o = Options {
            jwt_algorithm: Some("none".into()),
            ..Default::default()
        };
        assert!(o.resolve(generated).is_err());
        let o = Options {
            jwt_public_key: Some("k.pem".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        assert_eq!(o.resolve(generated).unwrap().algorithm, JwtAlgorithm::Rs256);
    }

    #[test]
    fn file_fills_only_what_flags_left_unset() {
        let dir = std::env::temp_dir().join(format!("rt-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("realtime.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\napi_key = \"from-file\"\nping_interval = \"3s\"\nclient_publish = [\"chat:*\"]\n",
        )
        .unwrap();
        let o = Options {
            config: Some(path.clone()),
            api_key: Some("from-flag".into()),
            ..Default::default()
        };
        let s = o.merge_file().unwrap().resolve(generated).unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.api_key, "from-flag");
        assert_eq!(s.engine.ping_interval, Duration::from_secs(3));
        assert!(s.engine.topic_policy.publish[0].matches("chat:x"));
        std::fs::write(&path, "no_such_option = 1\n").unwrap();
        let o = Options {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(o.merge_file(), Err(ConfigError::ParseFile { .. })));
    }
}
