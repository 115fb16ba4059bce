//! Model-based property test of the client topic policy, end to end through the
//! engine: random users and roles, random client subscribes, unsubscribes and
//! publishes and server-side publishes, over topics that hit every namespace of a
//! fixed policy. After every step each connection is drained and compared with an
//! independent oracle (a hand-written table of who may do what on each topic; it
//! never asks `TopicPolicy`): no connection ever receives a message it was not
//! entitled to, each receives exactly the messages the oracle expects, and every
//! reply is `subscribed` / `published` or a `forbidden` error exactly as it says.

use std::collections::BTreeSet;

use proptest::prelude::*;
use realtime::testing::{RejectAll, TestConnection};
use realtime::{Realtime, RealtimeConfig};
use realtime_core::{Namespace, PublishRule, Rules, TopicPolicy};
use serde_json::{Value, json};

/// User ids: `a:b` contains the segment separator and so owns no `{sub}` topic.
const USERS: &[&str] = &["alice", "bob", "a", "a:b"];
const ROLES: &[&str] = &["admin", "ops", "leads"];

/// Every namespace below, deeper topics, placeholder segments naming each user and
/// role, specificity contests and topics no namespace covers.
const TOPICS: &[&str] = &[
    "chat",
    "chat:lobby",
    "user:alice",
    "user:alice:inbox",
    "user:bob",
    "user:a",
    "user:a:b",
    "user:",
    "user:alice:public",
    "user:bob:public:x",
    "role:admin",
    "role:admin:x",
    "role:ops",
    "role:leads",
    "ops",
    "ops:x",
    "ops:audit",
    "ops:audit:y",
    "team:ops:alice",
    "team:admin:bob",
    "team:leads:a",
    "team:leads",
    "team:leads:bob",
    "inbox:alice",
    "inbox:bob:x",
    "vault",
    "vault:x",
    "news:today",
    "news",
    "misc",
    "users:all",
];

/// The policy under test, in the configuration's spelling.
fn policy() -> TopicPolicy {
    let namespaces = [
        ("chat", json!("authenticated"), json!("authenticated")),
        ("user:{sub}", json!("owner"), json!("owner")),
        ("user:{sub}:public", json!("authenticated"), json!("owner")),
        ("role:{role}", json!("owner"), json!("nobody")),
        // Listed after `role:{role}` and as long: wins on its literal segments.
        ("role:leads", json!("authenticated"), json!("nobody")),
        (
            "ops",
            json!({"roles": ["admin", "ops"]}),
            json!({"roles": ["admin"]}),
        ),
        ("ops:audit", json!({"roles": ["admin"]}), json!("nobody")),
        ("team:{role}:{sub}", json!("owner"), json!("owner")),
        (
            "team:leads",
            json!({"roles": ["admin"]}),
            json!("authenticated"),
        ),
        ("inbox:{sub}", json!("owner"), json!("authenticated")),
        ("vault", json!("nobody"), json!("nobody")),
    ]
    .into_iter()
    .map(|(pattern, subscribe, publish)| {
        let rules: Rules =
            serde_json::from_value(json!({"subscribe": subscribe, "publish": publish})).unwrap();
        Namespace::new(pattern, rules).unwrap()
    })
    .collect();
    let default =
        serde_json::from_value(json!({"subscribe": "authenticated", "publish": "nobody"})).unwrap();
    TopicPolicy {
        // The client-publish shorthand: opens these to anyone who may subscribe.
        publish: vec![PublishRule::new("news:*"), PublishRule::new("role:*")],
        ..TopicPolicy::new(namespaces, default).unwrap()
    }
}

/// A connection's identity.
#[derive(Debug, Clone)]
struct Who {
    user: &'static str,
    roles: Vec<&'static str>,
}

/// The oracle: may `who` (subscribe, publish) on `topic`? Written out per topic from
/// the policy above, not computed by the code under test.
fn rights(topic: &str, who: &Who) -> (bool, bool) {
    let is = |user: &str| who.user == user;
    let has = |role: &str| who.roles.contains(&role);
    let both = |yes: bool| (yes, yes);
    match topic {
        // `chat`: anyone, both ways.
        "chat" | "chat:lobby" => (true, true),
        // `user:{sub}`: the owner only, both ways; `a:b` owns nothing, `user:a:b`
        // is user a's; an empty segment names nobody.
        "user:alice" | "user:alice:inbox" => both(is("alice")),
        "user:bob" => both(is("bob")),
        "user:a" | "user:a:b" => both(is("a")),
        "user:" => (false, false),
        // `user:{sub}:public` is more specific: anyone reads, the owner writes.
        "user:alice:public" => (true, is("alice")),
        "user:bob:public:x" => (true, is("bob")),
        // `role:{role}`: holders read; publish "nobody", but the `role:*` shorthand
        // opens it to whoever may subscribe.
        "role:admin" | "role:admin:x" => both(has("admin")),
        "role:ops" => both(has("ops")),
        // `role:leads` beats `role:{role}` (as many segments, more literal ones):
        // anyone reads, so the shorthand lets anyone publish.
        "role:leads" => (true, true),
        // `ops`: admins and ops read, admins write; `ops:audit` is more specific.
        "ops" | "ops:x" => (has("admin") || has("ops"), has("admin")),
        "ops:audit" | "ops:audit:y" => (has("admin"), false),
        // `team:{role}:{sub}`: the user holding the role, both ways.
        "team:ops:alice" => both(has("ops") && is("alice")),
        "team:admin:bob" => both(has("admin") && is("bob")),
        "team:leads:a" => both(has("leads") && is("a")),
        // `team:leads` (2 segments, both literal) loses to `team:{role}:{sub}`
        // (3 segments) on `team:leads:bob`, and wins on `team:leads` itself.
        "team:leads" => (has("admin"), true),
        "team:leads:bob" => both(has("leads") && is("bob")),
        // `inbox:{sub}`: only the owner reads, anyone writes.
        "inbox:alice" => (is("alice"), true),
        "inbox:bob:x" => (is("bob"), true),
        "vault" | "vault:x" => (false, false),
        // No namespace: default rules (anyone reads, nobody writes), except where
        // the `news:*` shorthand opens publishing.
        "news:today" => (true, true),
        "news" | "misc" | "users:all" => (true, false),
        other => panic!("the oracle has no row for topic {other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe { conn: usize, topic: usize },
    Unsubscribe { conn: usize, topic: usize },
    Publish { conn: usize, topic: usize },
    ServerPublish { topic: usize },
}

fn who() -> impl Strategy<Value = Who> {
    (
        prop::sample::select(USERS),
        prop::sample::subsequence(ROLES, 0..=ROLES.len()),
    )
        .prop_map(|(user, roles)| Who { user, roles })
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0..4usize;
    let topic = 0..TOPICS.len();
    prop_oneof![
        4 => (conn.clone(), topic.clone()).prop_map(|(conn, topic)| Op::Subscribe { conn, topic }),
        1 => (conn.clone(), topic.clone()).prop_map(|(conn, topic)| Op::Unsubscribe { conn, topic }),
        3 => (conn, topic.clone()).prop_map(|(conn, topic)| Op::Publish { conn, topic }),
        2 => topic.prop_map(|topic| Op::ServerPublish { topic }),
    ]
}

/// What the oracle expects of one connection.
struct Model {
    who: Who,
    subscribed: BTreeSet<&'static str>,
}

/// Runs `ops` against a fresh engine and checks every step against the oracle.
async fn run(people: Vec<Who>, ops: Vec<Op>) {
    let rt = Realtime::new(
        RejectAll,
        RealtimeConfig {
            topic_policy: policy(),
            ..Default::default()
        },
    );
    let mut conns: Vec<TestConnection> = people
        .iter()
        .map(|w| TestConnection::connect(&rt, w.user, &w.roles))
        .collect();
    let mut models: Vec<Model> = people
        .into_iter()
        .map(|who| Model {
            who,
            subscribed: BTreeSet::new(),
        })
        .collect();
    let mut next_id = 0u64;

    for (step, op) in ops.into_iter().enumerate() {
        let reference = format!("r{step}");
        // The message this step publishes, if any, and the topic it goes to.
        let mut sent: Option<(&'static str, u64)> = None;
        match op {
            Op::Subscribe { conn, topic } => {
                let (c, topic) = (conn % conns.len(), TOPICS[topic]);
                let reply = conns[c]
                    .command(json!({"action": "subscribe", "topic": topic, "ref": reference}))
                    .await;
                let (may, _) = rights(topic, &models[c].who);
                if may {
                    assert_eq!(
                        reply,
                        json!({"type": "subscribed", "topic": topic, "ref": reference}),
                        "{:?} subscribing to {topic}",
                        models[c].who
                    );
                    models[c].subscribed.insert(topic);
                } else {
                    assert_forbidden(&reply, &reference, &models[c].who, "subscribe", topic);
                }
            }
            Op::Unsubscribe { conn, topic } => {
                let (c, topic) = (conn % conns.len(), TOPICS[topic]);
                let reply = conns[c]
                    .command(json!({"action": "unsubscribe", "topic": topic, "ref": reference}))
                    .await;
                assert_eq!(
                    reply,
                    json!({"type": "unsubscribed", "topic": topic, "ref": reference})
                );
                models[c].subscribed.remove(topic);
            }
            Op::Publish { conn, topic } => {
                let (c, topic) = (conn % conns.len(), TOPICS[topic]);
                let id = next_id;
                next_id += 1;
                let reply = conns[c]
                    .command(json!({
                        "action": "publish",
                        "topic": topic,
                        "message": {"type": "m", "id": id},
                        "ref": reference,
                    }))
                    .await;
                let (_, may) = rights(topic, &models[c].who);
                if may {
                    assert_eq!(
                        reply,
                        json!({
                            "type": "published",
                            "ref": reference,
                            "delivered": subscribers(&models, topic),
                            "relayed": false,
                        }),
                        "{:?} publishing on {topic}",
                        models[c].who
                    );
                    sent = Some((topic, id));
                } else {
                    assert_forbidden(&reply, &reference, &models[c].who, "publish", topic);
                }
            }
            Op::ServerPublish { topic } => {
                let topic = TOPICS[topic];
                let id = next_id;
                next_id += 1;
                let delivery = rt.publish(topic, json!({"type": "m", "id": id})).unwrap();
                assert_eq!(delivery.local, subscribers(&models, topic));
                sent = Some((topic, id));
            }
        }

        for (conn, model) in conns.iter_mut().zip(&models) {
            let received: Vec<(String, u64)> = conn
                .drain()
                .iter()
                .map(|frame| {
                    let topic = frame["topic"].as_str().expect("a topic message").to_owned();
                    // The invariant, checked on its own: every message arrives on a
                    // topic this connection may subscribe to.
                    assert!(
                        rights(&topic, &model.who).0,
                        "{:?} received {frame} on a topic it may not subscribe to",
                        model.who
                    );
                    (topic, frame["id"].as_u64().expect("a message id"))
                })
                .collect();
            let expected: Vec<(String, u64)> = sent
                .filter(|(topic, _)| model.subscribed.contains(topic))
                .map(|(topic, id)| (topic.to_owned(), id))
                .into_iter()
                .collect();
            assert_eq!(received, expected, "{:?} after step {step}", model.who);
        }
    }
}

fn subscribers(models: &[Model], topic: &str) -> usize {
    models
        .iter()
        .filter(|m| m.subscribed.contains(topic))
        .count()
}

fn assert_forbidden(reply: &Value, reference: &str, who: &Who, action: &str, topic: &str) {
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["ref"]),
        (&json!("error"), &json!("forbidden"), &json!(reference)),
        "{who:?} {action} {topic}: {reply}"
    );
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains(topic), "{message}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_connection_receives_what_it_may_not_read(
        people in prop::collection::vec(who(), 1..=4),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(people, ops));
    }
}

/// The oracle covers every topic, and every topic is valid.
#[test]
fn oracle_covers_every_topic() {
    let nobody = Who {
        user: "zed",
        roles: vec![],
    };
    for topic in TOPICS {
        realtime_core::Topic::parse(topic).unwrap();
        let _ = rights(topic, &nobody);
    }
}
