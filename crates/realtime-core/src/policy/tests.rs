//! Tests of the topic policy.

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
