//! Origin checks on the WebSocket upgrade (cross-site WebSocket hijacking): a real
//! server, real handshakes with and without `Origin`, under each configuration.

mod common;

use common::{Client, Handshake, TestServer, claims, options, sign_hs256, token};
use realtime_server::Options;

/// Attempts an authenticated upgrade with `origin` (if any).
async fn upgrade(server: &TestServer, token: &str, origin: Option<&str>) -> Handshake {
    let url = server.ws_url(token);
    let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
    Client::try_connect_with(&url, &headers).await
}

fn accepted(h: &Handshake) -> bool {
    matches!(h, Handshake::Accepted(_))
}

/// Asserts a 403 with the documented body.
fn assert_forbidden(h: Handshake, origin: &str) {
    match h {
        Handshake::Refused(status, body) => {
            assert_eq!(status, 403, "{origin}: {body}");
            assert_eq!(body["error"], "forbidden_origin", "{origin}: {body}");
        }
        Handshake::Accepted(_) => panic!("{origin} was accepted"),
    }
}

#[tokio::test]
async fn by_default_only_the_servers_own_host_and_origin_less_clients_connect() {
    let server = TestServer::start().await;
    let t = token("42", &[]);
    assert!(
        accepted(&upgrade(&server, &t, None).await),
        "no Origin: a backend"
    );
    let own = format!("http://{}", server.addr);
    assert!(accepted(&upgrade(&server, &t, Some(&own)).await), "{own}");
    for origin in ["https://evil.example", "http://localhost:3000", "null"] {
        assert_forbidden(upgrade(&server, &t, Some(origin)).await, origin);
    }
    // A refused origin is refused before the token is even looked at, registers
    // nothing, and is counted.
    assert_forbidden(
        upgrade(&server, "not-a-token", Some("https://evil.example")).await,
        "evil",
    );
    server.wait_for_connections(0).await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("realtime_handshakes_rejected_total{reason=\"forbidden_origin\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_allow_list_admits_exactly_the_listed_origins() {
    let server = TestServer::start_with(Options {
        allowed_origins: vec!["https://app.example.com".into()],
        ..options()
    })
    .await;
    let t = token("42", &[]);
    assert!(accepted(
        &upgrade(&server, &t, Some("https://app.example.com")).await
    ));
    assert!(accepted(&upgrade(&server, &t, None).await));
    let own = format!("http://{}", server.addr);
    for origin in [
        own.as_str(),
        "http://app.example.com",
        "https://app.example.com.evil.example",
    ] {
        assert_forbidden(upgrade(&server, &t, Some(origin)).await, origin);
    }
}

#[tokio::test]
async fn development_mode_also_admits_localhost_pages() {
    // No secret configured: development mode, with the secret the test harness
    // generates.
    let server = TestServer::start_with(Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await;
    let t = sign_hs256(&claims("dev", &[]), "generated-0123456789");
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:8080",
        "http://[::1]:3000",
    ] {
        assert!(
            accepted(&upgrade(&server, &t, Some(origin)).await),
            "{origin}"
        );
    }
    assert_forbidden(
        upgrade(&server, &t, Some("https://evil.example")).await,
        "evil",
    );
}
