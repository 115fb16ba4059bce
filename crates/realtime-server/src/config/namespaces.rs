//! The config file's topic namespaces (`[[namespaces]]`, `[default_namespace]`):
//! their access rules and history, checked and turned into the engine's
//! [`TopicPolicy`].

use std::time::Duration;

use realtime_core::policy::builtin_namespaces;
use realtime_core::{Access, HistoryLimits, Namespace, Rules, TopicPolicy};
use serde::Deserialize;

/// One `[[namespaces]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOptions {
    /// `:`-separated segments, each a literal or `{sub}` / `{role}`.
    pub pattern: String,
    pub subscribe: Access,
    pub publish: Access,
    /// Publications kept per topic; set with `history_ttl`, or neither.
    #[serde(default)]
    pub history_size: Option<u64>,
    /// How long a topic's history outlives its last publication, e.g. `"10m"`.
    #[serde(default, with = "super::options::humantime_opt")]
    pub history_ttl: Option<Duration>,
}

impl NamespaceOptions {
    /// A namespace without history.
    pub fn new(pattern: &str, subscribe: Access, publish: Access) -> NamespaceOptions {
        NamespaceOptions {
            pattern: pattern.to_owned(),
            subscribe,
            publish,
            history_size: None,
            history_ttl: None,
        }
    }

    /// The same namespace keeping `size` publications per topic for `ttl`.
    pub fn with_history(mut self, size: u64, ttl: Duration) -> NamespaceOptions {
        self.history_size = Some(size);
        self.history_ttl = Some(ttl);
        self
    }
}

/// The `[default_namespace]` table: rules and history for topics no namespace covers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultNamespaceOptions {
    pub subscribe: Access,
    pub publish: Access,
    #[serde(default)]
    pub history_size: Option<u64>,
    #[serde(default, with = "super::options::humantime_opt")]
    pub history_ttl: Option<Duration>,
}

/// The configured namespaces (the built-in ones when none are configured) and
/// default rules, checked. The error names the namespace it is about.
pub(super) fn topic_policy(
    namespaces: Option<Vec<NamespaceOptions>>,
    default: Option<DefaultNamespaceOptions>,
) -> Result<TopicPolicy, String> {
    let namespaces = match namespaces {
        None => builtin_namespaces(),
        Some(list) => list
            .into_iter()
            .map(|n| {
                let history = HistoryLimits::from_options(n.history_size, n.history_ttl)
                    .map_err(|e| format!("namespace {:?}: {e}", n.pattern))?;
                let rules = Rules {
                    subscribe: n.subscribe,
                    publish: n.publish,
                };
                Namespace::new(&n.pattern, rules)
                    .map(|ns| ns.with_history(history))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
    };
    let (rules, default_history) = match default {
        None => (Rules::default(), None),
        Some(d) => (
            Rules {
                subscribe: d.subscribe,
                publish: d.publish,
            },
            HistoryLimits::from_options(d.history_size, d.history_ttl)
                .map_err(|e| format!("default namespace: {e}"))?,
        ),
    };
    let mut policy = TopicPolicy::new(namespaces, rules).map_err(|e| e.to_string())?;
    policy.default_history = default_history;
    Ok(policy)
}
