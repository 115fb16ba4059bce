//! Topic namespaces configured in a TOML file, over real sockets: a server started
//! with `--config` applies each namespace's subscribe and publish rules, answers
//! refusals with `forbidden` error frames naming the rule, and drops the built-in
//! `user:{sub}` / `role:{role}` namespaces the file did not list.

mod common;

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"

[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "owner"

[[namespaces]]
pattern = "ops"
subscribe = { roles = ["admin"] }
publish = "nobody"

[default_namespace]
subscribe = "authenticated"
publish = "nobody"
"#;

/// A server whose options come from [`CONFIG`], read through `--config`.
async fn server() -> TestServer {
    server_from("it", CONFIG).await
}

/// A server whose options come from `config`, read through `--config` from a
/// file in a directory named after `name`.
async fn server_from(name: &str, config: &str) -> TestServer {
    let dir = std::env::temp_dir().join(format!("rt-namespaces-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("realtime.toml");
    std::fs::write(&path, config).unwrap();
    let options = realtime_server::Options {
        config: Some(path),
        ..options()
    }
    .merge_file()
    .expect("the config file is valid");
    let _ = std::fs::remove_dir_all(&dir);
    TestServer::start_with(options).await
}

fn forbidden(reference: &str, message: &str) -> Value {
    json!({"type": "error", "ref": reference, "code": "forbidden", "message": message})
}

async fn subscribe(client: &mut Client, topic: &str) -> Value {
    client
        .command(json!({"action": "subscribe", "topic": topic, "ref": topic}))
        .await
}

async fn publish(client: &mut Client, topic: &str, text: &str) -> Value {
    client
        .command(json!({
            "action": "publish", "topic": topic, "ref": topic,
            "message": {"type": "note", "text": text}
        }))
        .await
}

fn subscribed(topic: &str) -> Value {
    json!({"type": "subscribed", "topic": topic, "ref": topic})
}

fn published(topic: &str, delivered: usize) -> Value {
    json!({"type": "published", "ref": topic, "delivered": delivered, "relayed": false})
}

#[tokio::test]
async fn configured_namespaces_allow_and_deny_over_the_socket() {
    let server = server().await;
    let mut alice = server.connect("alice", &[]).await;
    let mut root = server.connect("root", &["admin"]).await;

    // `chat`: anyone reads and writes, deeper topics included.
    assert_eq!(
        subscribe(&mut root, "chat:lobby").await,
        subscribed("chat:lobby")
    );
    assert_eq!(
        publish(&mut alice, "chat:lobby", "hi").await,
        published("chat:lobby", 1)
    );
    let message = root.recv().await;
    assert_eq!(
        (&message["topic"], &message["text"]),
        (&json!("chat:lobby"), &json!("hi"))
    );

    // `ops`: admins read; nobody writes from a client.
    assert_eq!(
        subscribe(&mut alice, "ops:alerts").await,
        forbidden(
            "ops:alerts",
            "topic ops:alerts requires a role this connection does not hold (namespace ops)"
        )
    );
    assert_eq!(
        subscribe(&mut root, "ops:alerts").await,
        subscribed("ops:alerts")
    );
    assert_eq!(
        publish(&mut root, "ops:alerts", "x").await,
        forbidden(
            "ops:alerts",
            "client publishing is not enabled on topic ops:alerts (namespace ops)"
        )
    );

    // `user:{sub}`: the owner reads and writes, others neither.
    assert_eq!(
        subscribe(&mut alice, "user:alice").await,
        subscribed("user:alice")
    );
    // The publisher is subscribed: its copy is queued before the reply.
    assert_eq!(
        publish(&mut alice, "user:alice", "note to self").await["text"],
        "note to self"
    );
    assert_eq!(alice.recv().await, published("user:alice", 1));
    assert_eq!(
        subscribe(&mut root, "user:alice").await,
        forbidden("user:alice", "topic user:alice belongs to another user")
    );
    assert_eq!(
        publish(&mut root, "user:alice", "x").await,
        forbidden("user:alice", "topic user:alice belongs to another user")
    );

    // Not listed, so `role:{role}` is gone: `role:admin` follows the default
    // namespace, which reads for anyone and writes for nobody.
    assert_eq!(
        subscribe(&mut alice, "role:admin").await,
        subscribed("role:admin")
    );
    assert_eq!(
        publish(&mut alice, "role:admin", "x").await,
        forbidden(
            "role:admin",
            "client publishing is not enabled on topic role:admin"
        )
    );

    // The server's own publishes reach exactly the subscribers the rules admitted.
    let (status, body) = server
        .post("/api/topics/ops:alerts/messages", json!({"type": "page"}))
        .await;
    assert_eq!((status, &body["delivered"]), (200, &json!(1)), "{body}");
    assert_eq!(root.recv().await["type"], "page");
    alice.assert_nothing_pending().await;
    root.assert_nothing_pending().await;
}

/// Runs the real binary with `config` as its file, expects it to refuse at start
/// with exit code 2 (a configuration error; bounded by [`WAIT`]) and returns what
/// it wrote to stderr.
async fn refused_with(name: &str, config: &str) -> String {
    let dir = std::env::temp_dir().join(format!("rt-namespaces-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("realtime.toml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_realtime-server"))
            .env_clear()
            .arg("--config")
            .arg(&path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{name}: a configuration error exits with 2: {stderr}"
    );
    stderr
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_an_invalid_namespace() {
    let stderr = refused_with(
        "bad",
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
    )
    .await;
    assert!(
        stderr.contains("namespace \"chat\"") && stderr.contains("placeholder"),
        "the error names the namespace and the rule: {stderr}"
    );
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_invalid_history() {
    let namespace = |history: &str| {
        format!(
            "[[namespaces]]\npattern = \"user:{{sub}}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n\
             [[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n{history}"
        )
    };
    for (name, config, expected) in [
        (
            "size-0",
            namespace("history_size = 0\nhistory_ttl = \"1m\"\n"),
            "namespace \"chat\": history_size must be between 1 and 100000, not 0",
        ),
        (
            "ttl-0",
            namespace("history_size = 10\nhistory_ttl = \"0s\"\n"),
            "namespace \"chat\": history_ttl must be between 1s and 30 days",
        ),
        (
            "size-only",
            namespace("history_size = 10\n"),
            "namespace \"chat\": history_size and history_ttl must be set together",
        ),
        (
            "ttl-only",
            namespace("history_ttl = \"10m\"\n"),
            "namespace \"chat\": history_size and history_ttl must be set together",
        ),
        (
            "default-incomplete",
            "[default_namespace]\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nhistory_ttl = \"1h\"\n"
                .to_owned(),
            "default namespace: history_size and history_ttl must be set together",
        ),
        (
            "unknown-key",
            namespace("history_size = 10\nhistory_ttl = \"1m\"\nhistory_limit = 5\n"),
            "unknown field `history_limit`",
        ),
    ] {
        let stderr = refused_with(name, &config).await;
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn history_keys_reach_the_policy_of_the_running_server() {
    let server = server_from(
        "history",
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"authenticated\"\n\
         history_size = 3\nhistory_ttl = \"10m\"\n\
         [[namespaces]]\npattern = \"ops\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n",
    )
    .await;
    let policy = &server.rt.config().topic_policy;
    let limits = policy
        .history_for("chat:lobby")
        .expect("chat keeps history");
    assert_eq!(
        (limits.size(), limits.ttl()),
        (3, std::time::Duration::from_secs(600))
    );
    assert_eq!(policy.history_for("ops:alerts"), None);
    assert_eq!(policy.history_for("news"), None, "off by default");

    // Over the socket: a history topic answers its position, the others do not.
    let mut client = server.connect("alice", &[]).await;
    let reply = subscribe(&mut client, "chat:lobby").await;
    assert_eq!(
        (&reply["type"], &reply["offset"]),
        (&json!("subscribed"), &json!(0)),
        "{reply}"
    );
    assert!(reply["epoch"].is_string(), "{reply}");
    assert_eq!(
        subscribe(&mut client, "ops:alerts").await,
        subscribed("ops:alerts")
    );
}

#[tokio::test]
async fn the_binary_refuses_join_leave_without_presence() {
    let stderr = refused_with(
        "join-leave",
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\njoin_leave = true\n",
    )
    .await;
    assert!(
        stderr.contains("namespace \"chat\": join_leave = true needs presence = true"),
        "the error names the namespace: {stderr}"
    );
}

#[tokio::test]
async fn the_binary_refuses_a_short_webhook_secret() {
    let stderr = refused_with(
        "webhook-secret",
        "webhook_url = \"https://hooks.example/rt\"\nwebhook_secret = \"too-short\"\n",
    )
    .await;
    assert!(
        stderr.contains("REALTIME_WEBHOOK_SECRET must be at least 16 bytes, not 9"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the secret is never printed: {stderr}"
    );
}

#[tokio::test]
async fn presence_keys_reach_the_policy_of_the_running_server() {
    let server = server_from(
        "presence",
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"authenticated\"\n\
         presence = true\njoin_leave = true\n\
         [[namespaces]]\npattern = \"doc\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\npresence = true\n",
    )
    .await;
    let policy = &server.rt.config().topic_policy;
    use realtime_core::PresenceMode;
    assert_eq!(
        policy.presence_for("chat:lobby"),
        Some(PresenceMode { join_leave: true })
    );
    assert_eq!(
        policy.presence_for("doc:7"),
        Some(PresenceMode { join_leave: false })
    );
    assert_eq!(policy.presence_for("news"), None, "off by default");
}
