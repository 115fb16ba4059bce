//! Token lifecycle against a real server: the welcome carries the expiry, an
//! expired connection is closed with 3005, and `refresh` moves the expiry only for
//! a valid token naming the same user and roles.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn claims_until(user: &str, roles: &[&str], exp: i64) -> Value {
    json!({"sub": user, "roles": roles, "iat": now(), "exp": exp})
}

/// Connects with a token expiring at `exp`; returns the client after its welcome.
async fn connect_until(server: &TestServer, user: &str, exp: i64) -> Client {
    let token = sign_hs256(&claims_until(user, &[], exp), SECRET);
    let mut client = Client::connect(&server.ws_url(&token)).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(
        welcome["expires_at"], exp,
        "the welcome says when: {welcome}"
    );
    client
}

/// How long until Unix second `at` (zero if past).
fn until(at: i64) -> Duration {
    let at = UNIX_EPOCH + Duration::from_secs(at as u64);
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

#[tokio::test]
async fn an_expired_connection_is_closed_with_3005() {
    let server = TestServer::start().await;
    let mut client = connect_until(&server, "short", now() + 1).await;
    client.expect_close(3005).await;
    server.wait_for_connections(0).await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"realtime_disconnects_total{reason="token_expired"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_refresh_keeps_the_connection_open_past_the_old_expiry() {
    let server = TestServer::start().await;
    let old_exp = now() + 1;
    let mut client = connect_until(&server, "refresher", old_exp).await;
    let new_exp = now() + 3600;
    let fresh = sign_hs256(&claims_until("refresher", &[], new_exp), SECRET);
    let reply = client
        .command(json!({"action": "refresh", "token": fresh, "ref": "r1"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "refreshed", "ref": "r1", "expires_at": new_exp})
    );
    // Nothing (in particular no close) arrives until well past the old expiry.
    let window = until(old_exp) + Duration::from_millis(1500);
    let next = tokio::time::timeout(window, futures_util::StreamExt::next(&mut client.ws)).await;
    assert!(next.is_err(), "nothing expected, got {next:?}");
    client.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_refused_refresh_leaves_the_expiry_as_it_was() {
    let server = TestServer::start().await;
    let mut client = connect_until(&server, "alice", now() + 2).await;
    let later = now() + 3600;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            sign_hs256(&claims_until("mallory", &[], later), SECRET),
            "token_mismatch",
            "another user",
        ),
        (
            sign_hs256(&claims_until("alice", &["admin"], later), SECRET),
            "token_mismatch",
            "other roles",
        ),
        (
            sign_hs256(&claims_until("alice", &[], now() - 10), SECRET),
            "invalid_token",
            "expired",
        ),
        (
            sign_hs256(&claims_until("alice", &[], later), "not-the-secret"),
            "invalid_token",
            "bad_signature",
        ),
        ("not.a.jwt".into(), "invalid_token", "malformed"),
        (
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none"}"#),
                b64url(claims_until("alice", &[], later).to_string().as_bytes())
            ),
            "invalid_token",
            "invalid_algorithm",
        ),
    ];
    for (i, (token, code, says)) in cases.into_iter().enumerate() {
        let reply = client
            .command(json!({"action": "refresh", "token": token, "ref": i}))
            .await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert_eq!(reply["ref"], i, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(
            !message.contains(&token),
            "the token never appears in errors"
        );
    }
    // The refused refreshes changed nothing: the original expiry still closes it.
    client.expect_close(3005).await;
}

#[tokio::test]
async fn refresh_compares_roles_as_a_set() {
    let server = TestServer::start().await;
    let exp = now() + 3600;
    let token = sign_hs256(&claims_until("bea", &["a", "b"], exp), SECRET);
    let mut client = Client::connect(&server.ws_url(&token)).await;
    assert_eq!(client.recv().await["type"], "welcome");
    let missing_b = sign_hs256(&claims_until("bea", &["a", "a"], exp + 1), SECRET);
    let reply = client
        .command(json!({"action": "refresh", "token": missing_b}))
        .await;
    assert_eq!(reply["code"], "token_mismatch", "{reply}");
    let reordered = sign_hs256(&claims_until("bea", &["b", "a", "a"], exp + 2), SECRET);
    let reply = client
        .command(json!({"action": "refresh", "token": reordered}))
        .await;
    assert_eq!(reply, json!({"type": "refreshed", "expires_at": exp + 2}));
}
