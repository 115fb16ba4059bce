//! Who may subscribe to and publish on a topic from a client connection: namespaces
//! (a topic pattern with an access rule for each action), the default rules for
//! topics no namespace covers, and the decision for one connection and topic.
//!
//! Default policy: `user:<id>` and `user:<id>:...` only for user `<id>`;
//! `role:<r>` and `role:<r>:...` only for holders of role `<r>`; every other valid
//! topic is open to any authenticated connection for subscribing. Client publishing
//! is closed unless a [`PublishRule`] opens a topic, and even then only on topics the
//! publisher could subscribe to. Server-side subscribe bypasses this module.
//!
//! Which namespace governs a topic: among the namespaces whose pattern matches it
//! (see [`Pattern::matches`]), the one with the most segments, then the most literal
//! segments, then the first in configuration order. No match: the default rules.

mod access;
mod pattern;
mod publish_rule;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use access::{Access, Action};
pub use pattern::{Pattern, PatternError, Placeholder, Segment};
pub use publish_rule::PublishRule;

use crate::connection::ConnectionInfo;
use crate::history::HistoryLimits;
use crate::topic::Topic;

/// The access rule for each client action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub subscribe: Access,
    pub publish: Access,
}

impl Default for Rules {
    /// The built-in rules for topics no namespace covers: any authenticated
    /// connection may subscribe, no client may publish.
    fn default() -> Self {
        Rules {
            subscribe: Access::Authenticated,
            publish: Access::Nobody,
        }
    }
}

impl Rules {
    fn get(&self, action: Action) -> &Access {
        match action {
            Action::Subscribe => &self.subscribe,
            Action::Publish => &self.publish,
        }
    }
}

/// A topic pattern and its rules. Always valid: built by [`Namespace::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pattern: Pattern,
    rules: Rules,
    /// History kept for the namespace's topics; `None`: no history.
    history: Option<HistoryLimits>,
    /// Presence kept for the namespace's topics; `None`: no presence.
    presence: Option<PresenceMode>,
    /// Which backend proxy hooks the namespace's topics consult.
    proxy: ProxyUse,
}

/// Which backend proxy hooks a namespace's topics consult (both off by default):
/// the application backend decides client subscribes and publishes on top of the
/// namespace's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyUse {
    /// Client subscribes are sent to the subscribe hook after the rules allow them.
    pub subscribe: bool,
    /// Client publishes are sent to the publish hook after the rules allow them.
    pub publish: bool,
}

/// How a namespace keeps presence (who is subscribed to each of its topics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceMode {
    /// Also push `join` and `leave` frames to the topic's subscribers.
    pub join_leave: bool,
}

impl Namespace {
    /// Validates the pattern, and that `"owner"` is only used with a placeholder and
    /// role lists are not empty.
    pub fn new(pattern: &str, rules: Rules) -> Result<Namespace, PolicyError> {
        let parsed = Pattern::parse(pattern).map_err(|source| PolicyError::Pattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        let scope = Some(parsed.as_str());
        for action in [Action::Subscribe, Action::Publish] {
            check_access(scope, action, rules.get(action), parsed.has_placeholder())?;
        }
        Ok(Namespace {
            pattern: parsed,
            rules,
            history: None,
            presence: None,
            proxy: ProxyUse::default(),
        })
    }

    /// The same namespace, keeping `history` for its topics (`None`: none).
    pub fn with_history(mut self, history: Option<HistoryLimits>) -> Namespace {
        self.history = history;
        self
    }

    pub fn history(&self) -> Option<HistoryLimits> {
        self.history
    }

    /// The same namespace, keeping presence for its topics (`None`: none).
    pub fn with_presence(mut self, presence: Option<PresenceMode>) -> Namespace {
        self.presence = presence;
        self
    }

    pub fn presence(&self) -> Option<PresenceMode> {
        self.presence
    }

    /// The same namespace, consulting the backend proxy hooks `proxy` names.
    pub fn with_proxy(mut self, proxy: ProxyUse) -> Namespace {
        self.proxy = proxy;
        self
    }

    pub fn proxy(&self) -> ProxyUse {
        self.proxy
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

/// The built-in namespaces: `user:{sub}` and `role:{role}`, subscribe `"owner"`,
/// publish `"nobody"`.
pub fn builtin_namespaces() -> Vec<Namespace> {
    ["user:{sub}", "role:{role}"]
        .into_iter()
        .map(|pattern| {
            Namespace::new(
                pattern,
                Rules {
                    subscribe: Access::Owner,
                    publish: Access::Nobody,
                },
            )
            .expect("built-in namespaces are valid")
        })
        .collect()
}

/// A policy that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("namespace {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: PatternError,
    },
    #[error(
        "{}: {action} = \"owner\" needs a `{{sub}}` or `{{role}}` placeholder in the pattern",
        scope_label(.namespace.as_deref())
    )]
    OwnerWithoutPlaceholder {
        /// `None`: the default rules.
        namespace: Option<String>,
        action: Action,
    },
    #[error(
        "{}: {action} has an empty role list; write \"nobody\" to close it",
        scope_label(.namespace.as_deref())
    )]
    EmptyRoles {
        namespace: Option<String>,
        action: Action,
    },
    #[error(
        "namespace {pattern:?} never applies: namespace {earlier:?} comes first and covers the same topics"
    )]
    Shadowed { pattern: String, earlier: String },
}

fn scope_label(namespace: Option<&str>) -> String {
    match namespace {
        Some(pattern) => format!("namespace {pattern:?}"),
        None => "default namespace".to_owned(),
    }
}

fn check_access(
    namespace: Option<&str>,
    action: Action,
    access: &Access,
    has_placeholder: bool,
) -> Result<(), PolicyError> {
    let namespace = || namespace.map(str::to_owned);
    match access {
        Access::Owner if !has_placeholder => Err(PolicyError::OwnerWithoutPlaceholder {
            namespace: namespace(),
            action,
        }),
        Access::Roles(roles) if roles.is_empty() => Err(PolicyError::EmptyRoles {
            namespace: namespace(),
            action,
        }),
        _ => Ok(()),
    }
}

/// Why a client was refused a topic. `namespace` is the governing namespace's
/// pattern, `None` for the default rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// `"owner"`: a `{sub}` segment names another user.
    OtherUser { topic: String, namespace: Arc<str> },
    /// `"owner"`: a `{role}` segment names a role the connection does not hold.
    NotRoleHolder { topic: String, namespace: Arc<str> },
    /// A `{ roles = [...] }` rule, and the connection holds none of them.
    MissingRole {
        topic: String,
        namespace: Option<Arc<str>>,
    },
    /// Subscribing is `"nobody"`.
    SubscribeClosed {
        topic: String,
        namespace: Option<Arc<str>>,
    },
    /// Publishing is `"nobody"` and no [`PublishRule`] opens the topic.
    PublishClosed {
        topic: String,
        namespace: Option<Arc<str>>,
    },
}

impl Denied {
    /// The topic refused.
    pub fn topic(&self) -> &str {
        match self {
            Denied::OtherUser { topic, .. }
            | Denied::NotRoleHolder { topic, .. }
            | Denied::MissingRole { topic, .. }
            | Denied::SubscribeClosed { topic, .. }
            | Denied::PublishClosed { topic, .. } => topic,
        }
    }

    /// The pattern of the namespace whose rule refused, `None` for the default rules.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Denied::OtherUser { namespace, .. } | Denied::NotRoleHolder { namespace, .. } => {
                Some(namespace)
            }
            Denied::MissingRole { namespace, .. }
            | Denied::SubscribeClosed { namespace, .. }
            | Denied::PublishClosed { namespace, .. } => namespace.as_deref(),
        }
    }
}

impl fmt::Display for Denied {
    /// Owner refusals need no namespace: the topic itself names its owner. Rule
    /// refusals name the namespace whose rule it is (none for the default rules).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, namespace) = match self {
            Denied::OtherUser { topic, .. } => {
                return write!(f, "topic {topic} belongs to another user");
            }
            Denied::NotRoleHolder { topic, .. } => {
                return write!(
                    f,
                    "topic {topic} requires a role this connection does not hold"
                );
            }
            Denied::MissingRole { topic, namespace } => (
                format!("topic {topic} requires a role this connection does not hold"),
                namespace,
            ),
            Denied::SubscribeClosed { topic, namespace } => (
                format!("subscribing is not allowed on topic {topic}"),
                namespace,
            ),
            Denied::PublishClosed { topic, namespace } => (
                format!("client publishing is not enabled on topic {topic}"),
                namespace,
            ),
        };
        f.write_str(&text)?;
        match namespace {
            Some(pattern) => write!(f, " (namespace {pattern})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Denied {}

/// The topic access policy applied to client commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPolicy {
    /// Namespaces, in configuration order (the order only breaks specificity ties).
    /// Default: [`builtin_namespaces`].
    pub namespaces: Vec<Namespace>,
    /// Rules for topics no namespace covers. Default: [`Rules::default`].
    pub default: Rules,
    /// Topics that also accept client publishes from any connection that may
    /// subscribe to them, whatever their namespace's publish rule says (the
    /// `REALTIME_CLIENT_PUBLISH` shorthand). Empty by default.
    pub publish: Vec<PublishRule>,
    /// History for topics no namespace covers. Default: none.
    pub default_history: Option<HistoryLimits>,
    /// Presence for topics no namespace covers. Default: none.
    pub default_presence: Option<PresenceMode>,
}

impl Default for TopicPolicy {
    fn default() -> Self {
        TopicPolicy {
            namespaces: builtin_namespaces(),
            default: Rules::default(),
            publish: Vec::new(),
            default_history: None,
            default_presence: None,
        }
    }
}

impl TopicPolicy {
    /// A checked policy with no client-publish shorthand rules.
    pub fn new(namespaces: Vec<Namespace>, default: Rules) -> Result<TopicPolicy, PolicyError> {
        let policy = TopicPolicy {
            namespaces,
            default,
            publish: Vec::new(),
            default_history: None,
            default_presence: None,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what [`Namespace::new`] cannot: the default rules (no `"owner"`, no
    /// empty role list) and that no namespace is hidden by an earlier one covering
    /// the same topics. A policy that fails this still never grants more than it
    /// says: an `"owner"` default refuses everyone.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for action in [Action::Subscribe, Action::Publish] {
            check_access(None, action, self.default.get(action), false)?;
        }
        for (i, later) in self.namespaces.iter().enumerate() {
            if let Some(earlier) = self.namespaces[..i]
                .iter()
                .find(|earlier| earlier.pattern.same_topics_as(&later.pattern))
            {
                return Err(PolicyError::Shadowed {
                    pattern: later.pattern.as_str().to_owned(),
                    earlier: earlier.pattern.as_str().to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The namespace governing `topic`: the most specific matching one (most
    /// segments, then most literal segments, then first listed). `None`: the
    /// default rules apply.
    pub fn namespace_for(&self, topic: &str) -> Option<&Namespace> {
        let mut best: Option<&Namespace> = None;
        for ns in self
            .namespaces
            .iter()
            .filter(|ns| ns.pattern.matches(topic))
        {
            if best.is_none_or(|b| ns.pattern.specificity() > b.pattern.specificity()) {
                best = Some(ns);
            }
        }
        best
    }

    /// The history kept for `topic`: its namespace's, or the default's when no
    /// namespace covers it. `None`: the topic keeps no history.
    pub fn history_for(&self, topic: &str) -> Option<HistoryLimits> {
        match self.namespace_for(topic) {
            Some(ns) => ns.history,
            None => self.default_history,
        }
    }

    /// Whether any topic keeps history.
    pub fn has_history(&self) -> bool {
        self.default_history.is_some() || self.namespaces.iter().any(|ns| ns.history.is_some())
    }

    /// The presence kept for `topic`: its namespace's, or the default's when no
    /// namespace covers it. `None`: the topic keeps no presence.
    pub fn presence_for(&self, topic: &str) -> Option<PresenceMode> {
        match self.namespace_for(topic) {
            Some(ns) => ns.presence,
            None => self.default_presence,
        }
    }

    /// The proxy hooks `topic` consults: its namespace's. Topics no namespace
    /// covers consult none.
    pub fn proxy_for(&self, topic: &str) -> ProxyUse {
        self.namespace_for(topic)
            .map(|ns| ns.proxy)
            .unwrap_or_default()
    }

    /// Whether any topic keeps presence.
    pub fn has_presence(&self) -> bool {
        self.default_presence.is_some() || self.namespaces.iter().any(|ns| ns.presence.is_some())
    }

    /// May this connection subscribe to `topic`?
    pub fn can_subscribe(&self, conn: &ConnectionInfo, topic: &Topic) -> Result<(), Denied> {
        self.check(Action::Subscribe, conn, topic.as_str())
    }

    /// May this connection publish on `topic`? Its namespace's publish rule says so,
    /// or a [`PublishRule`] opens the topic and the connection may subscribe to it.
    pub fn can_publish(&self, conn: &ConnectionInfo, topic: &Topic) -> Result<(), Denied> {
        let refused = match self.check(Action::Publish, conn, topic.as_str()) {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        if self.publish.iter().any(|r| r.matches(topic.as_str())) {
            return self.can_subscribe(conn, topic);
        }
        Err(refused)
    }

    fn check(&self, action: Action, conn: &ConnectionInfo, topic: &str) -> Result<(), Denied> {
        let ns = self.namespace_for(topic);
        let access = ns.map_or(&self.default, |ns| &ns.rules).get(action);
        let allowed = match access {
            Access::Authenticated => true,
            Access::Nobody => false,
            Access::Roles(roles) => roles.iter().any(|r| conn.has_role(r)),
            Access::Owner => match ns {
                Some(ns) if ns.pattern.has_placeholder() => return is_owner(ns, conn, topic),
                // Only reachable by skipping `validate`: refuse rather than guess.
                _ => false,
            },
        };
        if allowed {
            return Ok(());
        }
        let topic = topic.to_owned();
        let namespace = ns.map(|ns| ns.pattern.as_arc().clone());
        Err(match (access, action) {
            (Access::Roles(_), _) => Denied::MissingRole { topic, namespace },
            (_, Action::Subscribe) => Denied::SubscribeClosed { topic, namespace },
            (_, Action::Publish) => Denied::PublishClosed { topic, namespace },
        })
    }
}

/// Whether `conn` is the one every placeholder of `ns` names in `topic`. An empty
/// segment names nobody. A user id containing ':' never equals one segment, so
/// such users own no `{sub}` topics: `user:a:b` is a sub-topic of user "a", never
/// user "a:b"'s topic.
fn is_owner(ns: &Namespace, conn: &ConnectionInfo, topic: &str) -> Result<(), Denied> {
    for (placeholder, segment) in ns.pattern.bindings(topic) {
        let held = !segment.is_empty()
            && match placeholder {
                Placeholder::Sub => segment == &*conn.user_id,
                Placeholder::Role => conn.has_role(segment),
            };
        if !held {
            let namespace = ns.pattern.as_arc().clone();
            let topic = topic.to_owned();
            return Err(match placeholder {
                Placeholder::Sub => Denied::OtherUser { topic, namespace },
                Placeholder::Role => Denied::NotRoleHolder { topic, namespace },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
