//! The config file's topic namespaces (`[[namespaces]]`, `[default_namespace]`):
//! their access rules, history, presence and proxy hooks, checked and turned
//! into the engine's [`TopicPolicy`].

use std::time::Duration;

use realtime_core::policy::builtin_namespaces;
use realtime_core::{Access, HistoryLimits, Namespace, PresenceMode, ProxyUse, Rules, TopicPolicy};
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
    /// Keep presence (who is subscribed) for the namespace's topics.
    #[serde(default)]
    pub presence: bool,
    /// Also push `join` / `leave` frames to subscribers; needs `presence`.
    #[serde(default)]
    pub join_leave: bool,
    /// Ask the subscribe proxy about client subscribes (after the rules allow
    /// them); needs `subscribe_proxy_url`.
    #[serde(default)]
    pub subscribe_proxy: bool,
    /// Ask the publish proxy about client publishes (after the rules allow
    /// them); needs `publish_proxy_url`.
    #[serde(default)]
    pub publish_proxy: bool,
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
            presence: false,
            join_leave: false,
            subscribe_proxy: false,
            publish_proxy: false,
        }
    }

    /// The same namespace consulting the subscribe and publish proxies `proxy`
    /// names.
    pub fn with_proxy(mut self, proxy: ProxyUse) -> NamespaceOptions {
        self.subscribe_proxy = proxy.subscribe;
        self.publish_proxy = proxy.publish;
        self
    }

    /// The same namespace keeping presence, with `join` / `leave` frames when
    /// `join_leave`.
    pub fn with_presence(mut self, join_leave: bool) -> NamespaceOptions {
        self.presence = true;
        self.join_leave = join_leave;
        self
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
    #[serde(default)]
    pub presence: bool,
    #[serde(default)]
    pub join_leave: bool,
}

/// The presence a namespace's two keys ask for; `join_leave` alone is refused,
/// since there would be no members to announce.
fn presence_mode(presence: bool, join_leave: bool) -> Result<Option<PresenceMode>, String> {
    match (presence, join_leave) {
        (false, false) => Ok(None),
        (false, true) => Err("join_leave = true needs presence = true".into()),
        (true, join_leave) => Ok(Some(PresenceMode { join_leave })),
    }
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
                let named = |e: String| format!("namespace {:?}: {e}", n.pattern);
                let history = HistoryLimits::from_options(n.history_size, n.history_ttl)
                    .map_err(|e| named(e.to_string()))?;
                let presence = presence_mode(n.presence, n.join_leave).map_err(named)?;
                let rules = Rules {
                    subscribe: n.subscribe,
                    publish: n.publish,
                };
                let proxy = ProxyUse {
                    subscribe: n.subscribe_proxy,
                    publish: n.publish_proxy,
                };
                Namespace::new(&n.pattern, rules)
                    .map(|ns| {
                        ns.with_history(history)
                            .with_presence(presence)
                            .with_proxy(proxy)
                    })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
    };
    let (rules, default_history, default_presence) = match default {
        None => (Rules::default(), None, None),
        Some(d) => (
            Rules {
                subscribe: d.subscribe,
                publish: d.publish,
            },
            HistoryLimits::from_options(d.history_size, d.history_ttl)
                .map_err(|e| format!("default namespace: {e}"))?,
            presence_mode(d.presence, d.join_leave)
                .map_err(|e| format!("default namespace: {e}"))?,
        ),
    };
    let mut policy = TopicPolicy::new(namespaces, rules).map_err(|e| e.to_string())?;
    policy.default_history = default_history;
    policy.default_presence = default_presence;
    Ok(policy)
}
