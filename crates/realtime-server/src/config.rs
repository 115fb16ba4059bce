//! Server configuration: command-line flags, `REALTIME_*` environment variables and an
//! optional TOML file, resolved into [`Settings`]. A flag or variable beats the file;
//! the file beats the built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use realtime::{JwtAlgorithm, RealtimeConfig};
use realtime_core::policy::builtin_namespaces;
use realtime_core::{
    Access, ClaimRules, Namespace, OriginPolicy, PolicyError, PublishRule, Rules, TopicPolicy,
};
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
    /// for `-`, e.g. `jwt_secret`), and the topic namespaces (`[[namespaces]]`,
    /// `[default_namespace]`), which only a file can set. Flags and environment
    /// variables override it.
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

    /// The HS256 secret being rotated out: tokens signed with it are still
    /// accepted until it is removed. [default: none]
    #[arg(long, env = "REALTIME_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,

    /// Path to a JWKS file (`{"keys":[...]}`) with the RS256 or ES256 public keys;
    /// a token's `kid` picks its key. Instead of REALTIME_JWT_PUBLIC_KEY.
    #[arg(long, env = "REALTIME_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Most connections one user may hold on this node; the next one is closed
    /// with 3504. 0 means no limit. [default: 0]
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,

    /// Most topics one connection may subscribe to itself; more get a
    /// `limit_exceeded` error. 0 means no limit. [default: 1024]
    #[arg(long, env = "REALTIME_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,

    /// Client commands per second per connection; over it commands get
    /// `rate_limited`, and sustained abuse is closed with 3013. 0 turns the limit
    /// off. [default: 100]
    #[arg(long, env = "REALTIME_COMMAND_RATE")]
    pub command_rate: Option<f32>,

    /// Commands a connection may send at once after a quiet period. [default: 2 × rate]
    #[arg(long, env = "REALTIME_COMMAND_BURST")]
    pub command_burst: Option<f32>,

    /// Longest topic name, in bytes (at most 255). [default: 255]
    #[arg(long, env = "REALTIME_MAX_TOPIC_LENGTH")]
    pub max_topic_length: Option<usize>,

    /// Topic namespaces (`[[namespaces]]` in the file only). When given they
    /// replace the built-in `user:{sub}` and `role:{role}` namespaces entirely.
    #[arg(skip)]
    pub namespaces: Option<Vec<NamespaceOptions>>,

    /// Rules for topics no namespace covers (`[default_namespace]` in the file
    /// only). [default: subscribe "authenticated", publish "nobody"]
    #[arg(skip)]
    pub default_namespace: Option<Rules>,
}

/// One `[[namespaces]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOptions {
    /// `:`-separated segments, each a literal or `{sub}` / `{role}`.
    pub pattern: String,
    pub subscribe: Access,
    pub publish: Access,
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
    /// True when the secret (and API key, if not given) were generated at start.
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
            worker_threads,
            namespaces,
            default_namespace
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
        let previous = self.jwt_previous_secret.filter(|p| !p.is_empty());
        if previous.is_some() && (algorithm != JwtAlgorithm::Hs256 || self.jwt_secret.is_none()) {
            return Err(ConfigError::Invalid(
                "REALTIME_JWT_PREVIOUS_SECRET needs REALTIME_JWT_SECRET (HS256)".into(),
            ));
        }
        let (key, development) = match (algorithm, self.jwt_secret, public) {
            (JwtAlgorithm::Hs256, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either REALTIME_JWT_SECRET (HS256) or a public key (RS256/ES256), not both".into(),
                ));
            }
            (JwtAlgorithm::Hs256, Some(secret), None) if secret.is_empty() => {
                return Err(ConfigError::Invalid("REALTIME_JWT_SECRET is empty".into()));
            }
            (JwtAlgorithm::Hs256, Some(current), None) => {
                (TokenKey::Secret { current, previous }, false)
            }
            (JwtAlgorithm::Hs256, None, None) => (
                TokenKey::Secret {
                    current: generate(),
                    previous: None,
                },
                true,
            ),
            (JwtAlgorithm::Hs256, None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "HS256 uses REALTIME_JWT_SECRET, not a public key; set REALTIME_JWT_ALGORITHM to RS256 or ES256".into(),
                ));
            }
            (_, _, Some(public)) => (public, false),
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
        if engine.ping_interval.is_zero() || engine.pong_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ping interval and pong timeout must be above zero".into(),
            ));
        }
        engine.origin_policy =
            OriginPolicy::allow(&self.allowed_origins).with_localhost(development);
        engine.topic_policy = topic_policy(self.namespaces, self.default_namespace)
            .map_err(|e| ConfigError::Invalid(format!("topic policy: {e}")))?;
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
        Ok(Settings {
            http: crate::limits::HttpLimits::default(),
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

/// The configured namespaces (the built-in ones when none are configured) and
/// default rules, checked.
fn topic_policy(
    namespaces: Option<Vec<NamespaceOptions>>,
    default: Option<Rules>,
) -> Result<TopicPolicy, PolicyError> {
    let namespaces = match namespaces {
        None => builtin_namespaces(),
        Some(list) => list
            .into_iter()
            .map(|n| {
                Namespace::new(
                    &n.pattern,
                    Rules {
                        subscribe: n.subscribe,
                        publish: n.publish,
                    },
                )
            })
            .collect::<Result<_, _>>()?,
    };
    TopicPolicy::new(namespaces, default.unwrap_or_default())
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

    /// Settings from a config file's text (flags and environment left unset).
    fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let options: Options = toml::from_str(text).map_err(|source| ConfigError::ParseFile {
            path: "test.toml".into(),
            source,
        })?;
        options.resolve(generated)
    }

    fn invalid(text: &str) -> String {
        match from_toml(text) {
            Err(ConfigError::Invalid(message)) => message,
            other => panic!("expected ConfigError::Invalid, got {other:?}"),
        }
    }

    /// The default list exactly as docs/OPERATIONS.md prints it.
    const DOCUMENTED_DEFAULT: &str = r#"
[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "nobody"

[[namespaces]]
pattern = "role:{role}"
subscribe = "owner"
publish = "nobody"

[default_namespace]
subscribe = "authenticated"
publish = "nobody"
"#;

    #[test]
    fn no_namespaces_configured_is_the_default_policy() {
        let s = from_toml("").unwrap();
        assert_eq!(s.engine.topic_policy, TopicPolicy::default());
        let s = from_toml(DOCUMENTED_DEFAULT).unwrap();
        assert_eq!(
            s.engine.topic_policy,
            TopicPolicy::default(),
            "the documented default list is the built-in one"
        );
    }

    #[test]
    fn configured_namespaces_replace_the_builtin_ones() {
        let s = from_toml(
            r#"
client_publish = ["news:*"]

[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"

[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "owner"

[[namespaces]]
pattern = "ops"
subscribe = { roles = ["admin", "ops"] }
publish = "nobody"
"#,
        )
        .unwrap();
        let policy = &s.engine.topic_policy;
        let listed: Vec<(&str, &Rules)> = policy
            .namespaces
            .iter()
            .map(|n| (n.pattern().as_str(), n.rules()))
            .collect();
        let rules = |subscribe, publish| Rules { subscribe, publish };
        assert_eq!(
            listed,
            vec![
                ("chat", &rules(Access::Authenticated, Access::Authenticated)),
                ("user:{sub}", &rules(Access::Owner, Access::Owner)),
                (
                    "ops",
                    &rules(
                        Access::Roles(vec!["admin".into(), "ops".into()]),
                        Access::Nobody
                    )
                ),
            ]
        );
        assert!(
            policy.namespace_for("role:admin").is_none(),
            "role:{{role}} is not kept"
        );
        assert_eq!(policy.default, Rules::default());
        assert!(policy.publish[0].matches("news:today"));

        let s = from_toml(
            "[default_namespace]\nsubscribe = \"nobody\"\npublish = { roles = [\"admin\"] }\n",
        )
        .unwrap();
        let policy = &s.engine.topic_policy;
        assert_eq!(
            policy.namespaces,
            builtin_namespaces(),
            "only the default changed"
        );
        assert_eq!(
            policy.default,
            rules(Access::Nobody, Access::Roles(vec!["admin".into()]))
        );

        let s = from_toml("namespaces = []\n").unwrap();
        assert!(
            s.engine.topic_policy.namespaces.is_empty(),
            "an empty list is a list"
        );
    }

    #[test]
    fn invalid_namespaces_name_the_namespace() {
        let owner = invalid(
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
        );
        assert_eq!(
            owner,
            "topic policy: namespace \"chat\": subscribe = \"owner\" needs a `{sub}` or `{role}` placeholder in the pattern"
        );
        let wildcard = invalid(
            "[[namespaces]]\npattern = \"chat:*\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n",
        );
        assert!(
            wildcard.starts_with("topic policy: namespace \"chat:*\": "),
            "{wildcard}"
        );
        let placeholder = invalid(
            "[[namespaces]]\npattern = \"user:{id}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
        );
        assert!(
            placeholder.contains("unknown placeholder `{id}`"),
            "{placeholder}"
        );
        let shadowed = invalid(
            "[[namespaces]]\npattern = \"x:{sub}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n\
             [[namespaces]]\npattern = \"x:{role}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
        );
        assert!(
            shadowed.contains("namespace \"x:{role}\" never applies"),
            "{shadowed}"
        );
        let empty_roles = invalid(
            "[[namespaces]]\npattern = \"ops\"\nsubscribe = { roles = [] }\npublish = \"nobody\"\n",
        );
        assert!(empty_roles.contains("empty role list"), "{empty_roles}");
        let default_owner =
            invalid("[default_namespace]\nsubscribe = \"owner\"\npublish = \"nobody\"\n");
        assert!(
            default_owner.starts_with("topic policy: default namespace: "),
            "{default_owner}"
        );
    }

    #[test]
    fn malformed_namespace_entries_are_parse_errors() {
        for text in [
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"everyone\"\npublish = \"nobody\"\n",
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\n",
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nowner = true\n",
            "[default_namespace]\nsubscribe = \"authenticated\"\n",
        ] {
            assert!(
                matches!(from_toml(text), Err(ConfigError::ParseFile { .. })),
                "{text}"
            );
        }
        let Err(ConfigError::ParseFile { source, .. }) = from_toml(
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"everyone\"\npublish = \"nobody\"\n",
        ) else {
            unreachable!()
        };
        assert!(
            source.to_string().contains("unknown access \"everyone\""),
            "{source}"
        );
    }

    #[test]
    fn namespaces_are_not_command_line_options() {
        use clap::CommandFactory;
        Options::command().debug_assert();
        let o = Options::try_parse_from(["realtime-server"]).unwrap();
        assert_eq!((o.namespaces, o.default_namespace), (None, None));
        assert!(Options::try_parse_from(["realtime-server", "--namespaces", "chat"]).is_err());
    }

    #[test]
    fn namespaces_come_from_the_file() {
        let dir = std::env::temp_dir().join(format!("rt-namespaces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("realtime.toml");
        std::fs::write(
            &path,
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"authenticated\"\n",
        )
        .unwrap();
        let o = Options {
            config: Some(path),
            ..Default::default()
        };
        let s = o.merge_file().unwrap().resolve(generated).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.engine.topic_policy.namespaces.len(), 1);
        assert_eq!(
            s.engine.topic_policy.namespaces[0].rules().publish,
            Access::Authenticated
        );
    }
}
