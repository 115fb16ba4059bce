//! Who may subscribe to and publish on a topic from a client connection.
//!
//! Default policy: `user:<id>` and `user:<id>:...` only for user `<id>`;
//! `role:<r>` and `role:<r>:...` only for holders of role `<r>`; every other valid
//! topic is open to any authenticated connection for subscribing. Client publishing
//! is closed unless a [`PublishRule`] opens a topic, and even then only on topics the
//! publisher could subscribe to. Server-side subscribe bypasses this module.

use crate::connection::ConnectionInfo;
use crate::topic::Topic;

/// Why a client was refused a topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("topic {0} belongs to another user")]
    OtherUser(String),
    #[error("topic {0} requires a role this connection does not hold")]
    MissingRole(String),
    #[error("client publishing is not enabled on topic {0}")]
    PublishClosed(String),
}

/// A topic pattern opened to client publishing: `chat:lobby` (exact) or
/// `chat:*` (every topic starting with `chat:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRule {
    pattern: String,
}

impl PublishRule {
    pub fn new(pattern: impl Into<String>) -> Self {
        PublishRule {
            pattern: pattern.into(),
        }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => topic == self.pattern,
        }
    }
}

/// The topic access policy applied to client commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPolicy {
    /// Topics opened to client publishing. Empty by default: clients cannot publish.
    pub publish: Vec<PublishRule>,
}

impl TopicPolicy {
    /// May this connection subscribe to `topic`?
    pub fn can_subscribe(&self, conn: &ConnectionInfo, topic: &Topic) -> Result<(), Denied> {
        let name = topic.as_str();
        if let Some(owner) = scoped_segment(name, "user:") {
            // A user id containing ':' can never equal a single segment, so such users
            // own no `user:` topics: this keeps `user:a:b` from being both user "a:b"'s
            // topic and a sub-topic of user "a".
            if owner == &*conn.user_id {
                return Ok(());
            }
            return Err(Denied::OtherUser(name.to_owned()));
        }
        if let Some(role) = scoped_segment(name, "role:") {
            if conn.has_role(role) {
                return Ok(());
            }
            return Err(Denied::MissingRole(name.to_owned()));
        }
        Ok(())
    }

    /// May this connection publish on `topic`? It must be opened to client publishing
    /// and readable by the publisher.
    pub fn can_publish(&self, conn: &ConnectionInfo, topic: &Topic) -> Result<(), Denied> {
        if !self.publish.iter().any(|r| r.matches(topic.as_str())) {
            return Err(Denied::PublishClosed(topic.as_str().to_owned()));
        }
        self.can_subscribe(conn, topic)
    }
}

/// For `prefix:<segment>` or `prefix:<segment>:...`, the segment.
fn scoped_segment<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    Some(rest.split(':').next().unwrap_or(rest))
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
            Err(Denied::PublishClosed("chat:lobby".into()))
        );
        let open = TopicPolicy {
            publish: vec![
                PublishRule::new("chat:*"),
                PublishRule::new("user:*"),
                PublishRule::new("news"),
            ],
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
}
