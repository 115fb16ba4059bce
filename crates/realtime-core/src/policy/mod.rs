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
mod tests {
    use super::*;
    use crate::identity::Identity;
    use uuid::Uuid;

    fn conn(user: &str, roles: &[&str]) -> ConnectionInfo {
        ConnectionInfo::new(
            Uuid::nil(),
            Identity {
                user_id: user.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                metadata: Default::default(),
                expires_at: None,
            },
            "2026-01-01T00:00:00Z".into(),
        )
    }

    fn t(name: &str) -> Topic {
        Topic::parse(name).unwrap()
    }

    fn rules(subscribe: Access, publish: Access) -> Rules {
        Rules { subscribe, publish }
    }

    fn ns(pattern: &str, subscribe: Access, publish: Access) -> Namespace {
        Namespace::new(pattern, rules(subscribe, publish)).unwrap()
    }

    fn roles(list: &[&str]) -> Access {
        Access::Roles(list.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn user_topics_only_for_their_user() {
        let p = TopicPolicy::default();
        let alice = conn("alice", &[]);
        assert!(p.can_subscribe(&alice, &t("user:alice")).is_ok());
        assert!(p.can_subscribe(&alice, &t("user:alice:inbox")).is_ok());
        assert!(p.can_subscribe(&alice, &t("user:bob")).is_err());
        assert!(p.can_subscribe(&alice, &t("user:bob:inbox")).is_err());
        assert!(p.can_subscribe(&alice, &t("user:alicex")).is_err());
        assert!(p.can_subscribe(&alice, &t("user:")).is_err());
    }

    #[test]
    fn user_ids_with_colons_own_no_user_topics() {
        let p = TopicPolicy::default();
        let odd = conn("a:b", &[]);
        assert!(p.can_subscribe(&odd, &t("user:a:b")).is_err());
        let a = conn("a", &[]);
        assert!(p.can_subscribe(&a, &t("user:a:b")).is_ok());
    }

    #[test]
    fn role_topics_only_for_holders() {
        let p = TopicPolicy::default();
        let admin = conn("u", &["admin"]);
        let plain = conn("v", &["user"]);
        assert!(p.can_subscribe(&admin, &t("role:admin")).is_ok());
        assert!(p.can_subscribe(&admin, &t("role:admin:alerts")).is_ok());
        assert!(p.can_subscribe(&plain, &t("role:admin")).is_err());
        assert!(p.can_subscribe(&plain, &t("role:administrator")).is_err());
    }

    #[test]
    fn other_topics_open_for_subscribe() {
        let p = TopicPolicy::default();
        assert!(p.can_subscribe(&conn("x", &[]), &t("order:123")).is_ok());
        assert!(p.can_subscribe(&conn("x", &[]), &t("users:all")).is_ok());
    }

    #[test]
    fn publishing_closed_by_default_and_opened_by_rules() {
        let closed = TopicPolicy::default();
        let x = conn("x", &[]);
        assert_eq!(
            closed.can_publish(&x, &t("chat:lobby")),
            Err(Denied::PublishClosed {
                topic: "chat:lobby".into(),
                namespace: None
            })
        );
        let open = TopicPolicy {
            publish: vec![
                PublishRule::new("chat:*"),
                PublishRule::new("user:*"),
                PublishRule::new("news"),
            ],
            ..Default::default()
        };
        assert!(open.can_publish(&x, &t("chat:lobby")).is_ok());
        assert!(open.can_publish(&x, &t("news")).is_ok());
        assert!(open.can_publish(&x, &t("newsroom")).is_err());
        assert!(open.can_publish(&x, &t("user:x")).is_ok());
        assert!(
            open.can_publish(&x, &t("user:y")).is_err(),
            "must also be readable"
        );
    }

    #[test]
    fn default_policy_is_the_builtin_namespaces() {
        let p = TopicPolicy::default();
        assert_eq!(
            p,
            TopicPolicy::new(
                vec![
                    ns("user:{sub}", Access::Owner, Access::Nobody),
                    ns("role:{role}", Access::Owner, Access::Nobody),
                ],
                rules(Access::Authenticated, Access::Nobody),
            )
            .unwrap()
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn denials_say_why_and_where() {
        let p = TopicPolicy::new(
            vec![
                ns("user:{sub}", Access::Owner, Access::Nobody),
                ns("role:{role}", Access::Owner, Access::Nobody),
                ns("ops", roles(&["admin"]), Access::Nobody),
                ns("audit", Access::Nobody, Access::Authenticated),
            ],
            rules(Access::Authenticated, Access::Nobody),
        )
        .unwrap();
        let x = conn("x", &[]);
        let msg = |r: Result<(), Denied>| r.unwrap_err().to_string();
        assert_eq!(
            msg(p.can_subscribe(&x, &t("user:y"))),
            "topic user:y belongs to another user"
        );
        assert_eq!(
            msg(p.can_subscribe(&x, &t("role:admin"))),
            "topic role:admin requires a role this connection does not hold"
        );
        assert_eq!(
            msg(p.can_subscribe(&x, &t("ops:1"))),
            "topic ops:1 requires a role this connection does not hold (namespace ops)"
        );
        assert_eq!(
            msg(p.can_subscribe(&x, &t("audit"))),
            "subscribing is not allowed on topic audit (namespace audit)"
        );
        assert_eq!(
            msg(p.can_publish(&x, &t("user:x"))),
            "client publishing is not enabled on topic user:x (namespace user:{sub})"
        );
        assert_eq!(
            msg(p.can_publish(&x, &t("chat"))),
            "client publishing is not enabled on topic chat"
        );
        let denied = p.can_subscribe(&x, &t("ops:1")).unwrap_err();
        assert_eq!((denied.topic(), denied.namespace()), ("ops:1", Some("ops")));
        let denied = p.can_publish(&x, &t("chat")).unwrap_err();
        assert_eq!(denied.namespace(), None);
    }

    #[test]
    fn each_access_kind() {
        let p = TopicPolicy::new(
            vec![
                ns("open", Access::Authenticated, Access::Authenticated),
                ns("staff", roles(&["admin", "ops"]), roles(&["admin"])),
                ns("closed", Access::Nobody, Access::Nobody),
                ns("inbox:{sub}", Access::Owner, Access::Authenticated),
            ],
            rules(Access::Nobody, Access::Nobody),
        )
        .unwrap();
        let plain = conn("alice", &["user"]);
        let ops = conn("bob", &["ops"]);
        let admin = conn("carol", &["admin"]);

        assert!(p.can_subscribe(&plain, &t("open:x")).is_ok());
        assert!(p.can_publish(&plain, &t("open:x")).is_ok());

        assert!(p.can_subscribe(&plain, &t("staff")).is_err());
        assert!(p.can_subscribe(&ops, &t("staff")).is_ok());
        assert!(p.can_subscribe(&admin, &t("staff:x")).is_ok());
        assert!(p.can_publish(&ops, &t("staff")).is_err());
        assert!(p.can_publish(&admin, &t("staff")).is_ok());

        for c in [&plain, &ops, &admin] {
            assert!(p.can_subscribe(c, &t("closed")).is_err());
            assert!(p.can_publish(c, &t("closed:x")).is_err());
            assert!(
                p.can_subscribe(c, &t("elsewhere")).is_err(),
                "default nobody"
            );
        }

        // Write-only for others: anyone may drop a message in alice's inbox, only
        // alice reads it.
        assert!(p.can_subscribe(&plain, &t("inbox:alice")).is_ok());
        assert!(p.can_subscribe(&ops, &t("inbox:alice")).is_err());
        assert!(p.can_publish(&ops, &t("inbox:alice")).is_ok());
    }

    #[test]
    fn most_specific_namespace_wins() {
        let p = TopicPolicy::new(
            vec![
                ns("user", Access::Nobody, Access::Nobody),
                ns("user:{sub}", Access::Owner, Access::Owner),
                ns("user:{sub}:public", Access::Authenticated, Access::Owner),
                ns("user:system", Access::Authenticated, Access::Nobody),
                ns("{role}:board", Access::Owner, Access::Nobody),
                ns("team:board", roles(&["lead"]), Access::Nobody),
            ],
            Rules::default(),
        )
        .unwrap();
        let pattern = |topic: &str| p.namespace_for(topic).map(|n| n.pattern().as_str());
        assert_eq!(pattern("user"), Some("user"));
        assert_eq!(pattern("user:bob"), Some("user:{sub}"));
        assert_eq!(pattern("user:bob:inbox"), Some("user:{sub}"));
        assert_eq!(pattern("user:bob:public"), Some("user:{sub}:public"));
        assert_eq!(pattern("user:bob:public:x"), Some("user:{sub}:public"));
        assert_eq!(
            pattern("user:system"),
            Some("user:system"),
            "literal beats placeholder"
        );
        assert_eq!(pattern("team:board"), Some("team:board"));
        assert_eq!(pattern("ops:board"), Some("{role}:board"));
        assert_eq!(pattern("users"), None);

        let alice = conn("alice", &[]);
        assert!(p.can_subscribe(&alice, &t("user")).is_err());
        assert!(p.can_subscribe(&alice, &t("user:bob")).is_err());
        assert!(p.can_subscribe(&alice, &t("user:bob:public")).is_ok());
        assert!(p.can_publish(&alice, &t("user:bob:public")).is_err());
        assert!(p.can_subscribe(&alice, &t("user:system")).is_ok());
        assert!(
            p.can_subscribe(&conn("x", &["ops"]), &t("ops:board"))
                .is_ok()
        );
        assert!(
            p.can_subscribe(&conn("x", &["ops"]), &t("team:board"))
                .is_err()
        );
    }

    #[test]
    fn first_listed_breaks_specificity_ties() {
        let p = TopicPolicy::new(
            vec![
                ns("{role}:x", Access::Owner, Access::Nobody),
                ns("a:{sub}", Access::Authenticated, Access::Nobody),
            ],
            Rules::default(),
        )
        .unwrap();
        assert_eq!(
            p.namespace_for("a:x").unwrap().pattern().as_str(),
            "{role}:x"
        );
        assert!(p.can_subscribe(&conn("u", &[]), &t("a:x")).is_err());
        assert!(p.can_subscribe(&conn("u", &["a"]), &t("a:x")).is_ok());
    }

    #[test]
    fn owner_binds_every_placeholder() {
        let p = TopicPolicy::new(
            vec![ns("team:{role}:{sub}", Access::Owner, Access::Owner)],
            Rules::default(),
        )
        .unwrap();
        let bob_ops = conn("bob", &["ops"]);
        assert!(p.can_subscribe(&bob_ops, &t("team:ops:bob")).is_ok());
        assert!(p.can_publish(&bob_ops, &t("team:ops:bob:notes")).is_ok());
        assert!(matches!(
            p.can_subscribe(&bob_ops, &t("team:dev:bob")),
            Err(Denied::NotRoleHolder { .. })
        ));
        assert!(matches!(
            p.can_subscribe(&bob_ops, &t("team:ops:alice")),
            Err(Denied::OtherUser { .. })
        ));
        // Empty segments name nobody, even for a connection holding the role "".
        let odd = conn("bob", &[""]);
        assert!(p.can_subscribe(&odd, &t("team::bob")).is_err());
        assert!(
            p.can_subscribe(&odd, &t("team:x")).is_ok(),
            "not in namespace"
        );
    }

    #[test]
    fn client_publish_shorthand_adds_to_namespace_rules() {
        let p = TopicPolicy {
            publish: vec![PublishRule::new("role:*"), PublishRule::new("ops:*")],
            ..TopicPolicy::new(
                vec![
                    ns("role:{role}", Access::Owner, Access::Nobody),
                    ns("ops", roles(&["ops"]), Access::Nobody),
                ],
                Rules::default(),
            )
            .unwrap()
        };
        assert!(p.can_publish(&conn("u", &["ops"]), &t("role:ops")).is_ok());
        assert!(p.can_publish(&conn("u", &["ops"]), &t("ops:x")).is_ok());
        assert_eq!(
            p.can_publish(&conn("u", &[]), &t("ops:x")),
            Err(Denied::MissingRole {
                topic: "ops:x".into(),
                namespace: Some("ops".into())
            }),
            "opened, but not readable: the subscribe refusal explains it"
        );
        assert!(
            p.can_publish(&conn("u", &["admin"]), &t("role:ops"))
                .is_err()
        );
    }

    #[test]
    fn invalid_namespaces_are_errors() {
        let err = |pattern: &str, r: Rules| Namespace::new(pattern, r).unwrap_err();
        assert!(matches!(
            err("chat:*", Rules::default()),
            PolicyError::Pattern { .. }
        ));
        let e = err("chat", rules(Access::Owner, Access::Nobody));
        assert_eq!(
            e,
            PolicyError::OwnerWithoutPlaceholder {
                namespace: Some("chat".into()),
                action: Action::Subscribe
            }
        );
        assert_eq!(
            e.to_string(),
            "namespace \"chat\": subscribe = \"owner\" needs a `{sub}` or `{role}` placeholder in the pattern"
        );
        assert!(matches!(
            err("chat", rules(Access::Nobody, roles(&[]))),
            PolicyError::EmptyRoles {
                action: Action::Publish,
                ..
            }
        ));
        let e = err("user:{id}", Rules::default());
        assert_eq!(
            e.to_string(),
            "namespace \"user:{id}\": unknown placeholder `{id}`: use `{sub}` or `{role}`"
        );
    }

    #[test]
    fn invalid_policies_are_errors_and_fail_closed() {
        let e = TopicPolicy::new(vec![], rules(Access::Owner, Access::Nobody)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "default namespace: subscribe = \"owner\" needs a `{sub}` or `{role}` placeholder in the pattern"
        );
        let e = TopicPolicy::new(
            vec![
                ns("x:{sub}", Access::Owner, Access::Nobody),
                ns("x:{role}", Access::Owner, Access::Nobody),
            ],
            Rules::default(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            PolicyError::Shadowed {
                pattern: "x:{role}".into(),
                earlier: "x:{sub}".into()
            }
        );
        // Built without `validate`: an owner default grants nothing.
        let unchecked = TopicPolicy {
            namespaces: vec![],
            default: rules(Access::Owner, Access::Owner),
            publish: vec![],
            default_history: None,
            default_presence: None,
        };
        assert!(unchecked.can_subscribe(&conn("u", &[]), &t("a")).is_err());
        assert!(unchecked.can_publish(&conn("u", &[]), &t("a")).is_err());
    }
}
