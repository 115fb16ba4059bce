//! The option table: every configuration option declared once, and from that one
//! declaration its `--flag`, its `REALTIME_*` variable, its TOML key, the merge of
//! the file under flags and environment, and its row in [`OPTIONS`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{DefaultNamespaceOptions, NamespaceOptions};

/// One option as operators see it: where it can be set, its default and what it
/// feeds. The docs table and the tests are checked against these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// Field name, and the TOML key when the file may set it.
    pub name: &'static str,
    /// The `REALTIME_*` variable, when the environment may set it.
    pub env: Option<&'static str>,
    /// Whether a command-line flag sets it (its name is [`OptionSpec::flag`]).
    pub command_line: bool,
    /// Whether the config file sets it.
    pub file: bool,
    /// The file's table holding it (`[proxy]`), when it is not a top-level key.
    pub section: Option<&'static str>,
    /// The default, as documented.
    pub default: &'static str,
    pub help: &'static str,
    /// Never printed: `--check-config` shows `<set>` instead.
    pub secret: bool,
    /// JSON pointer of the effective setting this option feeds in the output of
    /// `--check-config`.
    pub setting: &'static str,
}

impl OptionSpec {
    /// `--listen` for `listen`: clap's own naming of a `long` flag.
    pub fn flag(&self) -> Option<String> {
        self.command_line
            .then(|| format!("--{}", self.name.replace('_', "-")))
    }

    /// The TOML key, when the file may set it: `name`, or `section.name` (a
    /// dotted key, the same as `name` under `[section]`).
    pub fn key(&self) -> Option<String> {
        self.file.then(|| match self.section {
            Some(section) => format!("{section}.{}", self.name),
            None => self.name.to_owned(),
        })
    }
}

/// How a file value fills an option the command line and environment left unset.
trait Fill {
    fn fill(&mut self, from_file: Self);
}

impl<T> Fill for Option<T> {
    fn fill(&mut self, from_file: Self) {
        if self.is_none() {
            *self = from_file;
        }
    }
}

impl<T> Fill for Vec<T> {
    fn fill(&mut self, from_file: Self) {
        if self.is_empty() {
            *self = from_file;
        }
    }
}

/// Declares the options. Four groups, by where an option may be set:
/// `everywhere` (flag, variable and top-level file key), `section` (flag,
/// variable and a key of one file table, e.g. `[proxy]`), `command_line` (flag
/// and variable: the file's own path) and `file` (structured values only TOML
/// can hold).
macro_rules! options {
    (
        everywhere {
            $( $(#[$attr:meta])* $name:ident : $ty:ty {
                env: $env:literal, default: $default:literal, setting: $setting:literal,
                help: $help:literal $(, secret: $secret:literal)? $(,)?
            } )*
        }
        section $section:ident : $sstruct:ident {
            $( $(#[$sattr:meta])* $sname:ident : $sty:ty {
                env: $senv:literal, default: $sdefault:literal, setting: $ssetting:literal,
                help: $shelp:literal $(, secret: $ssecret:literal)? $(,)?
            } )*
        }
        command_line {
            $( $(#[$cattr:meta])* $cname:ident : $cty:ty {
                env: $cenv:literal, default: $cdefault:literal, setting: $csetting:literal,
                help: $chelp:literal $(,)?
            } )*
        }
        file {
            $( $(#[$fattr:meta])* $fname:ident : $fty:ty {
                default: $fdefault:literal, setting: $fsetting:literal, help: $fhelp:literal $(,)?
            } )*
        }
    ) => {
        /// Every configuration option, unresolved: `None` (or empty) is "not set
        /// in this source".
        #[derive(Debug, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Options {
            $(
                #[doc = $help]
                #[arg(long, env = $env, help = concat!($help, " [default: ", $default, "]"))]
                $( #[arg(hide_env_values = $secret)] )?
                $(#[$attr])*
                pub $name: $ty,
            )*
            #[doc = concat!("The `[", stringify!($section), "]` table.")]
            #[command(flatten)]
            #[serde(default)]
            pub $section: $sstruct,
            $(
                #[doc = $chelp]
                #[arg(long, env = $cenv, help = concat!($chelp, " [default: ", $cdefault, "]"))]
                #[serde(skip)]
                $(#[$cattr])*
                pub $cname: $cty,
            )*
            $(
                #[doc = $fhelp]
                #[arg(skip)]
                $(#[$fattr])*
                pub $fname: $fty,
            )*
        }

        #[doc = concat!("The options of the file's `[", stringify!($section), "]` table, also set by flag and variable.")]
        #[derive(Debug, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $sstruct {
            $(
                #[doc = $shelp]
                #[arg(long, env = $senv, help = concat!($shelp, " [default: ", $sdefault, "]"))]
                $( #[arg(hide_env_values = $ssecret)] )?
                $(#[$sattr])*
                pub $sname: $sty,
            )*
        }

        /// Every option, in the order of the docs table.
        pub static OPTIONS: &[OptionSpec] = &[
            $( OptionSpec {
                name: stringify!($name), env: Some($env), command_line: true, file: true,
                default: $default, help: $help, secret: false $(|| $secret)?, setting: $setting,
                section: None,
            }, )*
            $( OptionSpec {
                name: stringify!($sname), env: Some($senv), command_line: true, file: true,
                default: $sdefault, help: $shelp, secret: false $(|| $ssecret)?, setting: $ssetting,
                section: Some(stringify!($section)),
            }, )*
            $( OptionSpec {
                name: stringify!($cname), env: Some($cenv), command_line: true, file: false,
                default: $cdefault, help: $chelp, secret: false, setting: $csetting,
                section: None,
            }, )*
            $( OptionSpec {
                name: stringify!($fname), env: None, command_line: false, file: true,
                default: $fdefault, help: $fhelp, secret: false, setting: $fsetting,
                section: None,
            }, )*
        ];

        impl Options {
            /// Fills every option still unset from `file`: flags and variables beat
            /// the file.
            pub(super) fn fill_from(&mut self, file: Options) {
                $( Fill::fill(&mut self.$name, file.$name); )*
                $( Fill::fill(&mut self.$section.$sname, file.$section.$sname); )*
                $( Fill::fill(&mut self.$cname, file.$cname); )*
                $( Fill::fill(&mut self.$fname, file.$fname); )*
            }
        }
    };
}

options! {
    everywhere {
        listen: Option<SocketAddr> {
            env: "REALTIME_LISTEN", default: "127.0.0.1:8080", setting: "/listen",
            help: "Address to listen on.",
        }
        jwt_secret: Option<String> {
            env: "REALTIME_JWT_SECRET", default: "none", setting: "/jwt/secret",
            help: "HS256 shared secret for client tokens. With no key material and no API key at all: development mode.",
            secret: true,
        }
        jwt_algorithm: Option<String> {
            env: "REALTIME_JWT_ALGORITHM", default: "HS256, or RS256 with a public key", setting: "/jwt/algorithm",
            help: "Token algorithm, pinned: HS256, RS256 or ES256; any other `alg` (`none` included) is rejected.",
        }
        jwt_public_key: Option<PathBuf> {
            env: "REALTIME_JWT_PUBLIC_KEY", default: "none", setting: "/jwt/public_key",
            help: "Path to the PEM public key for RS256 or ES256 tokens.",
        }
        jwt_jwks_file: Option<PathBuf> {
            env: "REALTIME_JWT_JWKS_FILE", default: "none", setting: "/jwt/jwks_file",
            help: "Path to a JWKS file ({\"keys\":[...]}) with the RS256 or ES256 public keys, instead of a PEM key; a token's `kid` picks its key.",
        }
        jwt_previous_secret: Option<String> {
            env: "REALTIME_JWT_PREVIOUS_SECRET", default: "none", setting: "/jwt/previous_secret",
            help: "The HS256 secret being rotated out: tokens signed with it are still accepted until it is removed.",
            secret: true,
        }
        jwt_issuer: Option<String> {
            env: "REALTIME_JWT_ISSUER", default: "none", setting: "/jwt/issuer",
            help: "Required `iss` claim, when set.",
        }
        jwt_audience: Option<String> {
            env: "REALTIME_JWT_AUDIENCE", default: "none", setting: "/jwt/audience",
            help: "Required `aud` claim member, when set.",
        }
        jwt_leeway: Option<u64> {
            env: "REALTIME_JWT_LEEWAY", default: "0", setting: "/jwt/leeway",
            help: "Clock skew tolerated on exp/nbf/iat, in seconds; a connection also stays open this long past its `exp`.",
        }
        api_key: Option<String> {
            env: "REALTIME_API_KEY", default: "generated in development mode", setting: "/api_key",
            help: "Key backends send as `Authorization: Bearer <key>` on /api calls. Required outside development mode, and never set in it.",
            secret: true,
        }
        max_message_size: Option<usize> {
            env: "REALTIME_MAX_MESSAGE_SIZE", default: "65536", setting: "/engine/max_message_size",
            help: "Largest inbound WebSocket message in bytes; larger closes with 1009.",
        }
        outbound_queue: Option<usize> {
            env: "REALTIME_OUTBOUND_QUEUE", default: "1024", setting: "/engine/outbound_queue",
            help: "Outbound queue per connection, in messages; overflow closes it with 3008.",
        }
        outbound_queue_bytes: Option<usize> {
            env: "REALTIME_OUTBOUND_QUEUE_BYTES", default: "1048576", setting: "/engine/outbound_queue_bytes",
            help: "Bytes of frames queued per connection before it is a slow consumer (3008), on top of the message count.",
        }
        max_topic_length: Option<usize> {
            env: "REALTIME_MAX_TOPIC_LENGTH", default: "255", setting: "/engine/max_topic_length",
            help: "Longest topic name, in bytes (1 to 255).",
        }
        max_subscriptions: Option<usize> {
            env: "REALTIME_MAX_SUBSCRIPTIONS", default: "1024", setting: "/engine/max_subscriptions",
            help: "Most topics one connection may subscribe to itself; more get `limit_exceeded`. 0 means no limit.",
        }
        max_connections_per_user: Option<usize> {
            env: "REALTIME_MAX_CONNECTIONS_PER_USER", default: "0", setting: "/engine/max_connections_per_user",
            help: "Most connections one user may hold on this node; the next one is closed with 3504. 0 means no limit.",
        }
        command_rate: Option<f32> {
            env: "REALTIME_COMMAND_RATE", default: "100", setting: "/engine/command_rate",
            help: "Client commands per second per connection; over it commands get `rate_limited`, sustained abuse is closed with 3013. 0 turns the limit off.",
        }
        command_burst: Option<f32> {
            env: "REALTIME_COMMAND_BURST", default: "2 × rate", setting: "/engine/command_burst",
            help: "Commands a connection may send at once after a quiet period.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        ping_interval: Option<Duration> {
            env: "REALTIME_PING_INTERVAL", default: "25s", setting: "/engine/ping_interval",
            help: "Interval between server pings, e.g. `25s`, `500ms`.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        pong_timeout: Option<Duration> {
            env: "REALTIME_PONG_TIMEOUT", default: "10s", setting: "/engine/pong_timeout",
            help: "How long a ping may go unanswered before closing with 3012.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        write_timeout: Option<Duration> {
            env: "REALTIME_WRITE_TIMEOUT", default: "10s", setting: "/engine/write_timeout",
            help: "Longest a socket write may stay blocked on a peer that stopped reading before the connection is closed with 3008.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        shutdown_timeout: Option<Duration> {
            env: "REALTIME_SHUTDOWN_TIMEOUT", default: "10s", setting: "/shutdown_timeout",
            help: "Longest graceful shutdown before the process exits anyway.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        header_read_timeout: Option<Duration> {
            env: "REALTIME_HEADER_READ_TIMEOUT", default: "10s", setting: "/http/header_read_timeout",
            help: "Longest time a client may take to send its request headers.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        keep_alive_timeout: Option<Duration> {
            env: "REALTIME_KEEP_ALIVE_TIMEOUT", default: "60s", setting: "/http/keep_alive_timeout",
            help: "Longest time an idle keep-alive connection is kept open between requests.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        upgrade_timeout: Option<Duration> {
            env: "REALTIME_UPGRADE_TIMEOUT", default: "10s", setting: "/http/upgrade_timeout",
            help: "Longest time a WebSocket upgrade may take, until the welcome is sent.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        request_timeout: Option<Duration> {
            env: "REALTIME_REQUEST_TIMEOUT", default: "60s", setting: "/http/request_timeout",
            help: "Longest time from a complete request head until its response is written.",
        }
        max_connections: Option<usize> {
            env: "REALTIME_MAX_CONNECTIONS", default: "open files − 512", setting: "/http/max_connections",
            help: "Most TCP connections served at once (WebSockets and SSE streams included); one more is answered 503.",
        }
        #[arg(value_delimiter = ',')]
        #[serde(default)]
        client_publish: Vec<String> {
            env: "REALTIME_CLIENT_PUBLISH", default: "none", setting: "/engine/client_publish",
            help: "Topic patterns clients may publish on, comma-separated: `chat:lobby` (exact) or `chat:*` (prefix).",
        }
        #[arg(value_delimiter = ',')]
        #[serde(default)]
        allowed_origins: Vec<String> {
            env: "REALTIME_ALLOWED_ORIGINS", default: "the server's own host (plus localhost in development mode)", setting: "/allowed_origins",
            help: "Browser origins that may open connections, comma-separated; `*` allows every origin. Upgrades without `Origin` are always allowed.",
        }
        provider: Option<String> {
            env: "REALTIME_PROVIDER", default: "memory", setting: "/provider/kind",
            help: "Where connections of other nodes are reached: `memory` (one node) or `redis` (several nodes sharing one Redis).",
        }
        redis_url: Option<String> {
            env: "REALTIME_REDIS_URL", default: "redis://127.0.0.1:6379", setting: "/provider/redis_url",
            help: "Redis URL for the `redis` provider.",
            secret: true,
        }
        redis_prefix: Option<String> {
            env: "REALTIME_REDIS_PREFIX", default: "realtime", setting: "/provider/redis_prefix",
            help: "Prefix of every Redis channel and key, so deployments can share one Redis.",
        }
        node_id: Option<String> {
            env: "REALTIME_NODE_ID", default: "node-<random>", setting: "/node_id",
            help: "This node's name in cluster views.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        cluster_heartbeat: Option<Duration> {
            env: "REALTIME_CLUSTER_HEARTBEAT", default: "5s", setting: "/provider/cluster_heartbeat",
            help: "How often a node refreshes its cluster records; a dead node leaves the cluster views within three of these.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        presence_node_timeout: Option<Duration> {
            env: "REALTIME_PRESENCE_NODE_TIMEOUT", default: "10s", setting: "/presence/node_timeout",
            help: "Longest a node killed without cleaning up stays in presence answers (3s to 1h); its lease is renewed every fifth of it.",
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        presence_offline_grace: Option<Duration> {
            env: "REALTIME_PRESENCE_OFFLINE_GRACE", default: "5s", setting: "/presence/offline_grace",
            help: "How long a user (topic) must stay without connections (members) before `user.offline` (`topic.vacated`) is sent, so a page reload emits nothing (0 to 1h).",
        }
        webhook_url: Option<String> {
            env: "REALTIME_WEBHOOK_URL", default: "none", setting: "/webhooks/url",
            help: "http:// or https:// URL presence events are POSTed to; setting it turns the events on.",
        }
        webhook_secret: Option<String> {
            env: "REALTIME_WEBHOOK_SECRET", default: "none", setting: "/webhooks/secret",
            help: "Key of the `X-Realtime-Signature` HMAC-SHA256 over each webhook body; required with `webhook_url`, at least 16 bytes.",
            secret: true,
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        webhook_timeout: Option<Duration> {
            env: "REALTIME_WEBHOOK_TIMEOUT", default: "5s", setting: "/webhooks/timeout",
            help: "Longest one webhook attempt may take before it counts as failed and is retried.",
        }
        webhook_max_attempts: Option<u32> {
            env: "REALTIME_WEBHOOK_MAX_ATTEMPTS", default: "10", setting: "/webhooks/max_attempts",
            help: "Attempts per webhook event in all (backoff 1s, 2s, 4s … capped at 60s) before it is given up and counted failed; at least 1.",
        }
        webhook_queue_size: Option<usize> {
            env: "REALTIME_WEBHOOK_QUEUE_SIZE", default: "10000", setting: "/webhooks/queue_size",
            help: "Most webhook events waiting for delivery; past it new events are dropped and counted; at least 1.",
        }
        log: Option<String> {
            env: "REALTIME_LOG", default: "info", setting: "/log",
            help: "Log filter in `tracing` syntax, e.g. `info` or `realtime=debug`.",
        }
        worker_threads: Option<usize> {
            env: "REALTIME_WORKER_THREADS", default: "one per CPU", setting: "/worker_threads",
            help: "Runtime worker threads.",
        }
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        allow_remote_development: Option<bool> {
            env: "REALTIME_ALLOW_REMOTE_DEVELOPMENT", default: "false", setting: "/allow_remote_development",
            help: "Let development mode listen on a non-loopback address (its tokens and API key are then reachable from the network).",
        }
    }
    section proxy: ProxyOptions {
        connect_proxy_url: Option<String> {
            env: "REALTIME_CONNECT_PROXY_URL", default: "none", setting: "/proxy/connect_url",
            help: "http:// or https:// URL of the backend's connect proxy, asked at every handshake who the connection is (see *Proxy hooks*).",
        }
        #[arg(value_delimiter = ',')]
        #[serde(default)]
        connect_proxy_headers: Vec<String> {
            env: "REALTIME_CONNECT_PROXY_HEADERS", default: "none", setting: "/proxy/connect_headers",
            help: "Handshake headers forwarded to the connect proxy besides the cookies, comma-separated names, e.g. `x-forwarded-for,user-agent`.",
        }
        subscribe_proxy_url: Option<String> {
            env: "REALTIME_SUBSCRIBE_PROXY_URL", default: "none", setting: "/proxy/subscribe_url",
            help: "http:// or https:// URL of the backend's subscribe proxy, asked about client subscribes on namespaces with `subscribe_proxy = true`.",
        }
        publish_proxy_url: Option<String> {
            env: "REALTIME_PUBLISH_PROXY_URL", default: "none", setting: "/proxy/publish_url",
            help: "http:// or https:// URL of the backend's publish proxy, asked about client publishes on namespaces with `publish_proxy = true`.",
        }
        proxy_secret: Option<String> {
            env: "REALTIME_PROXY_SECRET", default: "none", setting: "/proxy/secret",
            help: "Key of the `X-Realtime-Signature` HMAC-SHA256 over each proxy request body; required with any proxy URL, at least 16 bytes.",
            secret: true,
        }
        #[arg(value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_opt")]
        proxy_timeout: Option<Duration> {
            env: "REALTIME_PROXY_TIMEOUT", default: "1s", setting: "/proxy/timeout",
            help: "Longest one proxy call may take, waiting for a free slot included (at most 1m); past it the call is refused as `proxy_unavailable`.",
        }
        proxy_max_concurrency: Option<usize> {
            env: "REALTIME_PROXY_MAX_CONCURRENCY", default: "64", setting: "/proxy/max_concurrency",
            help: "Most calls in flight to each proxy hook at once; more wait for a slot within the timeout; 1 to 65536.",
        }
    }
    command_line {
        config: Option<PathBuf> {
            env: "REALTIME_CONFIG", default: "none", setting: "/config_file",
            help: "TOML file with any of these options (keys are the long flag names with `_` for `-`) and the topic namespaces; flags and variables override it.",
        }
    }
    file {
        namespaces: Option<Vec<NamespaceOptions>> {
            default: "user:{sub}, role:{role}", setting: "/engine/namespaces",
            help: "Topic namespaces (`[[namespaces]]`) with their access rules, history, presence and proxy hooks; when given they replace the built-in ones entirely.",
        }
        default_namespace: Option<DefaultNamespaceOptions> {
            default: "subscribe authenticated, publish nobody", setting: "/engine/default_namespace",
            help: "Rules, history and presence for topics no namespace covers (`[default_namespace]`).",
        }
    }
}

/// `Option<Duration>` in TOML as a humantime string such as `"25s"`.
pub(super) mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
