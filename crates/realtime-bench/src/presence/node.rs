//! A server under test for the presence benchmarks: one node on the memory or
//! the Redis provider (with a private `redis-server`), started with a config
//! file declaring the benchmark's namespaces, with or without presence, and
//! without the per-connection command limit.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::history::Store;
use crate::servers::{Binaries, Redis, ServerProcess};

/// How a namespace keeps presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The namespace without presence: the churn baseline.
    Off,
    /// `presence = true`: lists and counts, no join/leave frames.
    On,
    /// `presence = true`, `join_leave = true`.
    JoinLeave,
}

/// A running node and what it needs: stopped and cleaned up together.
pub struct Node {
    pub server: ServerProcess,
    pub redis: Option<Redis>,
    config: ConfigFile,
}

impl Node {
    /// Starts one node on `store` with one namespace per topic in `topics`,
    /// each keeping `presence`.
    pub async fn start(
        bins: &Binaries,
        store: Store,
        topics: &[&str],
        presence: Presence,
    ) -> anyhow::Result<Node> {
        let redis = match store {
            Store::Memory => None,
            Store::Redis => Some(Redis::start().await?),
        };
        let config = ConfigFile::write(&namespaces_toml(topics, presence))?;
        let env = vec![
            (
                "REALTIME_CONFIG".to_owned(),
                config.path.display().to_string(),
            ),
            // One client asks thousands of questions a second, one after the
            // other: the per-connection command limit (100/s) would answer
            // most of them `rate_limited`.
            ("REALTIME_COMMAND_RATE".to_owned(), "0".to_owned()),
        ];
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
            "realtime-bench-presence-{}-{nanos}.toml",
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

/// One namespace per topic, with the rules topics no namespace covers (any
/// authenticated connection subscribes, no client publishes), so runs with and
/// without presence differ by presence alone.
fn namespaces_toml(topics: &[&str], presence: Presence) -> String {
    let keeps = match presence {
        Presence::Off => "",
        Presence::On => "presence = true\n",
        Presence::JoinLeave => "presence = true\njoin_leave = true\n",
    };
    topics
        .iter()
        .map(|topic| {
            format!(
                "[[namespaces]]\npattern = \"{topic}\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n{keeps}"
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_gets_a_namespace_with_the_presence_asked() {
        assert_eq!(
            namespaces_toml(&["a", "b"], Presence::On),
            "[[namespaces]]\npattern = \"a\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\npresence = true\n\n\
             [[namespaces]]\npattern = \"b\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\npresence = true\n"
        );
        assert!(!namespaces_toml(&["a"], Presence::Off).contains("presence"));
        assert!(namespaces_toml(&["a"], Presence::JoinLeave).ends_with("join_leave = true\n"));
    }
}
