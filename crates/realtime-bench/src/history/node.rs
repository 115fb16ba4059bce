//! A server under test with or without a history namespace: the TOML file that
//! declares it, the store (memory, or Redis through a private `redis-server`),
//! and the processes to stop afterwards. The presence benchmarks start theirs
//! with [`Node::launch`] too.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::servers::{Binaries, Redis, ServerProcess};

/// Where a server keeps history (and, with Redis, shares its bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// One node, history in the process.
    Memory,
    /// One node with `provider = "redis"`: history in Redis streams.
    Redis,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis => "redis",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Store> {
        Ok(match name {
            "memory" => Store::Memory,
            "redis" => Store::Redis,
            other => anyhow::bail!("unknown store `{other}` (memory, redis)"),
        })
    }
}

/// The history a namespace keeps, as written in the TOML file.
#[derive(Debug, Clone)]
pub struct HistoryLimits {
    pub size: u64,
    /// A duration the server's config accepts, e.g. `10m`.
    pub ttl: String,
}

/// A running node and what it needs: killed and cleaned up when stopped or dropped.
pub struct Node {
    pub server: ServerProcess,
    pub redis: Option<Redis>,
    config: Option<ConfigFile>,
}

impl Node {
    /// Starts one node on `store`; with `history`, topic `topic` (and every topic
    /// under `topic:`) is in a namespace keeping that history.
    pub async fn start(
        bins: &Binaries,
        store: Store,
        topic: &str,
        history: Option<&HistoryLimits>,
    ) -> anyhow::Result<Node> {
        let config = history.map(|limits| namespace_toml(topic, limits));
        Node::launch(bins, store, config.as_deref(), Vec::new()).await
    }

    /// Starts one node on `store` with the config file `config` (if any) and
    /// the extra environment `env`.
    pub(crate) async fn launch(
        bins: &Binaries,
        store: Store,
        config: Option<&str>,
        mut env: Vec<(String, String)>,
    ) -> anyhow::Result<Node> {
        let redis = match store {
            Store::Memory => None,
            Store::Redis => Some(Redis::start().await?),
        };
        let config = config.map(ConfigFile::write).transpose()?;
        env.extend(
            config
                .iter()
                .map(|c| ("REALTIME_CONFIG".to_owned(), c.path.display().to_string())),
        );
        let url = redis.as_ref().map(Redis::url);
        let server = bins.realtime(url.as_deref(), "bench-node", &env).await?;
        Ok(Node {
            server,
            redis,
            config,
        })
    }

    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().map(Redis::pid)
    }

    pub async fn stop(self) {
        self.server.stop().await;
        drop(self.redis);
        drop(self.config);
    }
}

/// A config file in the temp directory, removed when dropped.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn write(text: &str) -> anyhow::Result<ConfigFile> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "realtime-bench-node-{}-{nanos}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(ConfigFile { path })
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One namespace for `topic` with the default rules for topics no namespace
/// covers (any authenticated connection subscribes, no client publishes), so a
/// run with history differs from one without by the history alone.
fn namespace_toml(topic: &str, limits: &HistoryLimits) -> String {
    format!(
        "[[namespaces]]\npattern = \"{topic}\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n\
         history_size = {}\nhistory_ttl = \"{}\"\n",
        limits.size, limits.ttl
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_names_the_topic_and_both_limits() {
        let limits = HistoryLimits {
            size: 1000,
            ttl: "10m".into(),
        };
        let text = namespace_toml("bench", &limits);
        assert_eq!(
            text,
            "[[namespaces]]\npattern = \"bench\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nhistory_size = 1000\nhistory_ttl = \"10m\"\n"
        );
        assert_eq!(Store::parse("redis").unwrap(), Store::Redis);
        assert!(Store::parse("nats").is_err());
    }
}
