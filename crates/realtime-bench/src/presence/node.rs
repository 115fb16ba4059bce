//! A server under test for the presence benchmarks: one node on the memory or
//! the Redis provider (with a private `redis-server`), started with a config
//! file declaring the benchmark's namespaces, with or without presence, and
//! without the per-connection command limit.

use crate::history::Store;
pub use crate::history::node::Node;
use crate::servers::Binaries;

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

/// Starts one node on `store` with one namespace per topic in `topics`, each
/// keeping `presence`.
pub async fn start(
    bins: &Binaries,
    store: Store,
    topics: &[&str],
    presence: Presence,
) -> anyhow::Result<Node> {
    let env = vec![
        // One client asks thousands of questions a second, one after the
        // other: the per-connection command limit (100/s) would answer most of
        // them `rate_limited`.
        ("REALTIME_COMMAND_RATE".to_owned(), "0".to_owned()),
    ];
    Node::launch(bins, store, Some(&namespaces_toml(topics, presence)), env).await
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
