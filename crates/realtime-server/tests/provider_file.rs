//! `provider = "redis"` in the config file never runs a standalone node: with Redis
//! unreachable at start the real binary serves degraded (health 503, sends 503) and
//! joins when a real `redis-server` appears on the configured port.

mod binary;
mod common;
mod processes;

use common::{API_KEY, Client, SECRET, answer, token};
use processes::{RedisServer, free_port};
use serde_json::{Value, json};

async fn health(node: &binary::Running) -> (u16, Value) {
    answer(reqwest::Client::new().get(node.url("/health"))).await
}

async fn send_to_user(node: &binary::Running, user: &str) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .post(node.url(&format!("/api/users/{user}/messages")))
            .bearer_auth(API_KEY)
            .json(&json!({"type": "hello"})),
    )
    .await
}

#[tokio::test]
async fn a_redis_provider_from_the_file_starts_degraded_and_joins_when_redis_appears() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("rt-provider-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("realtime.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\njwt_secret = \"{SECRET}\"\napi_key = \"{API_KEY}\"\n\
             provider = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\n\
             redis_prefix = \"rt-file\"\nnode_id = \"from-file\"\ncluster_heartbeat = \"200ms\"\n"
        ),
    )
    .unwrap();
    let mut node = binary::start(&[("REALTIME_CONFIG", path.to_str().unwrap())], &[])
        .await
        .listening();

    let (status, body) = health(&node).await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("degraded")),
        "{body}"
    );
    let mut client = Client::connect(&format!(
        "ws://{}/ws?token={}",
        node.local(),
        token("file-user", &[])
    ))
    .await;
    assert_eq!(client.recv().await["type"], "welcome");
    let (status, body) = send_to_user(&node, "file-user").await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("bus_unavailable")),
        "{body}"
    );

    let _redis = RedisServer::start_on(port).await;
    // Each link logs its first connect after its state is up: once all three
    // have, health answers 200.
    for link in ["subscriber", "publisher", "directory"] {
        node.wait_for_log(&["redis link connected", &format!("link=\"{link}\"")])
            .await;
    }
    assert_eq!(health(&node).await.0, 200);
    let (status, body) = send_to_user(&node, "file-user").await;
    assert_eq!(status, 200, "{body}");
    let hello = client.recv().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let _ = std::fs::remove_dir_all(&dir);
}
