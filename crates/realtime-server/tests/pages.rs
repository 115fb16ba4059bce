//! The pages the server serves itself, against a real server: the JavaScript
//! client and the admin page always (with a strict Content-Security-Policy), the
//! demo page and `/dev/token` only in development mode and only for loopback
//! `Host`s, and `/api/stats`, which the admin page charts.

mod binary;
mod common;

use common::*;
use realtime_server::Options;
use serde_json::json;

/// What the test harness generates for every secret in development mode.
const GENERATED: &str = "generated-0123456789";

/// Development mode: no key material and no API key, on a free loopback port.
fn development_options() -> Options {
    Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    }
}

/// `GET path` with exactly the `Host` header given (or none).
async fn get_with_host(
    server: &TestServer,
    path: &str,
    host: Option<&str>,
) -> (u16, serde_json::Value) {
    let header = host.map(|h| format!("Host: {h}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    binary::request(server.addr, "GET", path, &headers, "").await
}

#[tokio::test]
async fn development_pages_answer_only_loopback_hosts() {
    let server = TestServer::start_with(development_options()).await;
    let port = server.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".into(),
        format!("localhost:{port}"),
        "LocalHost".into(),
        format!("demo.localhost:{port}"),
        format!("[::1]:{port}"),
        "127.8.9.10".into(),
    ] {
        let (status, body) = get_with_host(&server, "/dev/token", Some(&host)).await;
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(body["api_key"], GENERATED, "{host}");
    }
    // A DNS-rebinding page sends its own name; nothing else is loopback either.
    for host in [
        Some(format!("attacker.example:{port}")),
        Some("attacker.example".into()),
        Some("localhost.attacker.example".into()),
        Some(format!("10.1.2.3:{port}")),
        Some(format!("[::ffff:7f00:1]x:{port}")),
        None,
    ] {
        for path in ["/dev/token", "/", "/assets/demo.js"] {
            let (status, body) = get_with_host(&server, path, host.as_deref()).await;
            assert_eq!(status, 403, "{host:?} {path}: {body}");
            assert_eq!(body["error"], "forbidden_host", "{host:?} {path}");
            assert!(body["message"].is_string(), "{body}");
            assert!(body.get("api_key").is_none());
        }
    }
    // Pages that reveal nothing are served to any host.
    let (status, _) = get_with_host(&server, "/health", Some("attacker.example")).await;
    assert_eq!(status, 200);
}

async fn fetch(server: &TestServer, path: &str) -> reqwest::Response {
    server.http.get(server.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn the_client_and_the_admin_page_are_served_with_a_strict_policy() {
    let server = TestServer::start().await;
    for (path, kind, needle) in [
        (
            "/client/realtime-client.js",
            "text/javascript",
            "export class RealtimeClient",
        ),
        (
            "/admin",
            "text/html",
            "<title>Boundary Realtime — admin</title>",
        ),
        ("/assets/admin.js", "text/javascript", "sessionStorage"),
        ("/assets/style.css", "text/css", ":root"),
    ] {
        let response = fetch(&server, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {:?}",
            headers["content-type"]
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
}

#[tokio::test]
async fn the_demo_and_dev_tokens_exist_only_in_development_mode() {
    let production = TestServer::start().await;
    for path in ["/", "/assets/demo.js", "/dev/token"] {
        let response = fetch(&production, path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }

    let development = TestServer::start_with(development_options()).await;
    let page = fetch(&development, "/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/assets/demo.js"));
    let handed: serde_json::Value =
        fetch(&development, "/dev/token?user=visitor&roles=a,%20b&ttl=60")
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(handed["user_id"], "visitor");
    assert_eq!(handed["roles"], json!(["a", "b"]));
    assert_eq!(handed["api_key"], GENERATED, "the generated API key");
    let expires_at = handed["expires_at"].as_i64().unwrap();
    assert!((now() + 59..=now() + 61).contains(&expires_at), "{handed}");
    // The token it hands out opens a connection for that user and those roles.
    let token = handed["token"].as_str().unwrap();
    let mut client = Client::connect(&development.ws_url(token)).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["user_id"], "visitor");
    assert_eq!(welcome["roles"], json!(["a", "b"]));
    assert_eq!(welcome["expires_at"], expires_at);

    let bad = fetch(
        &development,
        &format!("/dev/token?user={}", "x".repeat(200)),
    )
    .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn stats_count_connections_topics_messages_and_deliveries() {
    let server = TestServer::start().await;
    let (status, zero) = server.get("/api/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        zero,
        json!({"connections": 0, "topics": 0, "messages": 0, "deliveries": 0})
    );
    let mut a = server.connect("a", &[]).await;
    let _b = server.connect("b", &[]).await;
    a.command(json!({"action": "subscribe", "topic": "chat"}))
        .await;
    server.post("/api/broadcast", json!({"type": "x"})).await;
    server
        .post("/api/topics/chat/messages", json!({"type": "y"}))
        .await;
    let (_, stats) = server.get("/api/stats").await;
    assert_eq!(
        stats,
        json!({"connections": 2, "topics": 1, "messages": 2, "deliveries": 3})
    );
    let (status, _) = answer(server.http.get(server.url("/api/stats"))).await;
    assert_eq!(status, 401, "stats need the API key");
}
