//! Handshake authentication against a real server: where the token may come from, every
//! rejection reason (HTTP 401 with a JSON reason, nothing registered), the pinned
//! algorithm (HS256, RS256, ES256; `none` and key confusion refused), issuer and
//! audience rules, extra claims as metadata, and the rejection metrics.

mod common;

use common::*;
use realtime_server::Options;
use serde_json::{Value, json};

/// Asserts the attempt was refused with 401 and `reason`, and that the server holds
/// no connection afterwards (in the engine and as reported by the API).
async fn assert_rejected(server: &TestServer, attempt: Handshake, reason: &str) {
    let (status, body) = match attempt {
        Handshake::Refused(status, body) => (status, body),
        Handshake::Accepted(_) => panic!("handshake accepted, expected rejection {reason}"),
    };
    assert_eq!(status, 401, "status for {reason}: {body}");
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let message = body["message"].as_str().expect("a message string");
    assert!(!message.is_empty(), "{body}");
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["error", "message", "reason"], "{body}");
    assert_no_connections(server).await;
}

/// Offers `token` in the query string and asserts the documented rejection.
async fn assert_token_rejected(server: &TestServer, token: &str, reason: &str) {
    assert_rejected(server, server.handshake(Some(token), None).await, reason).await;
}

async fn assert_no_connections(server: &TestServer) {
    assert_eq!(server.rt.connection_count(), 0);
    let (status, list) = server.get("/api/connections").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"scope": "local", "count": 0, "connections": []})
    );
}

/// Asserts the attempt was accepted and its welcome names `user`; returns the client.
async fn assert_accepted(attempt: Handshake, user: &str) -> Client {
    let mut client = match attempt {
        Handshake::Accepted(c) => *c,
        Handshake::Refused(status, body) => panic!("handshake refused: {status} {body}"),
    };
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["user_id"], user, "{welcome}");
    client.id = welcome["connection_id"].as_str().unwrap().to_owned();
    client
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

/// A token with the given header and claims and an empty signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

#[tokio::test]
async fn token_in_query_parameter_is_accepted() {
    let server = TestServer::start().await;
    let t = token("alice", &["admin"]);
    let mut alice = assert_accepted(server.handshake(Some(&t), None).await, "alice").await;
    server.wait_for_connections(1).await;
    alice.assert_nothing_pending().await;
}

#[tokio::test]
async fn token_in_authorization_header_is_accepted() {
    let server = TestServer::start().await;
    let t = token("bob", &[]);
    let bearer = format!("Bearer {t}");
    let mut bob = assert_accepted(server.handshake(None, Some(&bearer)).await, "bob").await;
    assert_eq!(server.rt.connection_count(), 1);
    bob.assert_nothing_pending().await;
}

#[tokio::test]
async fn header_token_wins_over_query_token() {
    let server = TestServer::start().await;
    let bearer = format!("Bearer {}", token("carol", &[]));
    let _carol = assert_accepted(
        server.handshake(Some("not-a-jwt"), Some(&bearer)).await,
        "carol",
    )
    .await;
    let bad_bearer = "Bearer not-a-jwt";
    let good = token("carol", &[]);
    let attempt = server.handshake(Some(&good), Some(bad_bearer)).await;
    // The first connection is still open; the refused attempt adds nothing.
    match attempt {
        Handshake::Refused(status, body) => {
            assert_eq!((status, &body["reason"]), (401, &json!("malformed")));
        }
        Handshake::Accepted(_) => panic!("header token must win over the query token"),
    }
    assert_eq!(server.rt.connection_count(), 1);
}

#[tokio::test]
async fn missing_token_is_rejected() {
    let server = TestServer::start().await;
    assert_rejected(&server, server.handshake(None, None).await, "missing_token").await;
    assert_rejected(
        &server,
        server.handshake(Some(""), None).await,
        "missing_token",
    )
    .await;
    assert_rejected(
        &server,
        server.handshake(None, Some("Basic dXNlcjpwYXNz")).await,
        "missing_token",
    )
    .await;
}

#[tokio::test]
async fn garbage_token_is_malformed() {
    let server = TestServer::start().await;
    for garbage in ["garbage", "a.b", "!!!.e30.x", "e30.e30.x", "a.b.c.d"] {
        assert_rejected(
            &server,
            server.handshake(Some(garbage), None).await,
            "malformed",
        )
        .await;
    }
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let server = TestServer::start().await;
    let expired = with(claims("alice", &[]), "exp", json!(now() - 10));
    let t = sign_hs256(&expired, SECRET);
    assert_rejected(&server, server.handshake(Some(&t), None).await, "expired").await;
}

#[tokio::test]
async fn wrong_secret_is_a_bad_signature() {
    let server = TestServer::start().await;
    let t = sign_hs256(&claims("alice", &[]), "some-other-secret");
    assert_token_rejected(&server, &t, "bad_signature").await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let server = TestServer::start().await;
    let t = unsigned(
        &json!({"alg": "none", "typ": "JWT"}),
        &claims("alice", &["admin"]),
    );
    assert_token_rejected(&server, &t, "invalid_algorithm").await;
    // Case games do not help either.
    let t = unsigned(
        &json!({"alg": "None", "typ": "JWT"}),
        &claims("alice", &["admin"]),
    );
    assert_token_rejected(&server, &t, "invalid_algorithm").await;
}

#[tokio::test]
async fn rs256_token_against_hs256_server_is_an_invalid_algorithm() {
    let server = TestServer::start().await;
    let t = sign_rs256(&claims("alice", &[]));
    assert_token_rejected(&server, &t, "invalid_algorithm").await;
}

fn rs256_options() -> realtime_server::Options {
    realtime_server::Options {
        jwt_algorithm: Some("RS256".into()),
        jwt_public_key: Some(fixture("rsa-public.pem")),
        jwt_secret: None,
        ..options()
    }
}

fn es256_options() -> realtime_server::Options {
    realtime_server::Options {
        jwt_algorithm: Some("ES256".into()),
        jwt_public_key: Some(fixture("ec-public.pem")),
        jwt_secret: None,
        ..options()
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused_by_an_rs256_server() {
    let server = TestServer::start_with(rs256_options()).await;
    let public_pem = std::fs::read_to_string(fixture("rsa-public.pem")).unwrap();
    let t = sign_hs256(&claims("mallory", &["admin"]), &public_pem);
    assert_token_rejected(&server, &t, "invalid_algorithm").await;
}

#[tokio::test]
async fn rs256_server_accepts_rs256_tokens_only() {
    let server = TestServer::start_with(rs256_options()).await;
    let t = sign_rs256(&claims("alice", &["admin"]));
    let mut alice = assert_accepted(server.handshake(Some(&t), None).await, "alice").await;
    alice.assert_nothing_pending().await;
    for (t, reason) in [
        (token("bob", &[]), "invalid_algorithm"),
        (sign_es256(&claims("bob", &[])), "invalid_algorithm"),
    ] {
        match server.handshake(Some(&t), None).await {
            Handshake::Refused(status, body) => {
                assert_eq!((status, &body["reason"]), (401, &json!(reason)), "{body}");
            }
            Handshake::Accepted(_) => panic!("accepted a token the RS256 server must refuse"),
        }
    }
    assert_eq!(server.rt.connection_count(), 1);
    // A tampered RS256 token: payload swapped, signature kept.
    let mut parts: Vec<String> = t_parts(&sign_rs256(&claims("alice", &[])));
    parts[1] = b64url(claims("root", &["admin"]).to_string().as_bytes());
    let tampered = parts.join(".");
    drop(alice);
    server.wait_for_connections(0).await;
    assert_rejected(
        &server,
        server.handshake(Some(&tampered), None).await,
        "bad_signature",
    )
    .await;
}

fn t_parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

#[tokio::test]
async fn es256_server_accepts_es256_tokens() {
    let server = TestServer::start_with(es256_options()).await;
    let t = sign_es256(&claims("erin", &["ops"]));
    let mut erin = assert_accepted(server.handshake(Some(&t), None).await, "erin").await;
    erin.assert_nothing_pending().await;
    drop(erin);
    server.wait_for_connections(0).await;
    let rs = sign_rs256(&claims("erin", &[]));
    assert_rejected(
        &server,
        server.handshake(Some(&rs), None).await,
        "invalid_algorithm",
    )
    .await;
}

#[tokio::test]
async fn future_nbf_is_not_yet_valid() {
    let server = TestServer::start().await;
    let c = with(claims("alice", &[]), "nbf", json!(now() + 600));
    let t = sign_hs256(&c, SECRET);
    assert_token_rejected(&server, &t, "not_yet_valid").await;
}

#[tokio::test]
async fn missing_sub_is_invalid_claims() {
    let server = TestServer::start().await;
    let t = sign_hs256(&without(claims("alice", &[]), "sub"), SECRET);
    assert_token_rejected(&server, &t, "invalid_claims").await;
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let server = TestServer::start_with(realtime_server::Options {
        jwt_issuer: Some("https://auth.example".into()),
        jwt_audience: Some("realtime".into()),
        ..options()
    })
    .await;
    let base = with(
        with(claims("alice", &[]), "iss", json!("https://auth.example")),
        "aud",
        json!("realtime"),
    );

    let wrong_iss = with(base.clone(), "iss", json!("https://evil.example"));
    let t = sign_hs256(&wrong_iss, SECRET);
    assert_token_rejected(&server, &t, "invalid_issuer").await;
    let t = sign_hs256(&without(base.clone(), "iss"), SECRET);
    assert_token_rejected(&server, &t, "invalid_issuer").await;

    let wrong_aud = with(base.clone(), "aud", json!("billing"));
    let t = sign_hs256(&wrong_aud, SECRET);
    assert_token_rejected(&server, &t, "invalid_audience").await;
    let t = sign_hs256(&without(base.clone(), "aud"), SECRET);
    assert_token_rejected(&server, &t, "invalid_audience").await;

    let t = sign_hs256(&base, SECRET);
    let _first = assert_accepted(server.handshake(Some(&t), None).await, "alice").await;
    let in_list = with(base, "aud", json!(["billing", "realtime"]));
    let t = sign_hs256(&in_list, SECRET);
    let _second = assert_accepted(server.handshake(Some(&t), None).await, "alice").await;
    assert_eq!(server.rt.connection_count(), 2);
}

#[tokio::test]
async fn extra_claims_appear_as_metadata() {
    let server = TestServer::start().await;
    let c = with(
        with(
            claims("alice", &["admin", "ops"]),
            "email",
            json!("a@example.com"),
        ),
        "tenant",
        json!({"id": 7}),
    );
    let t = sign_hs256(&c, SECRET);
    let alice = assert_accepted(server.handshake(Some(&t), None).await, "alice").await;
    let (status, list) = server.get("/api/connections").await;
    assert_eq!(status, 200);
    assert_eq!(list["scope"], "local");
    assert_eq!(list["count"], 1);
    let conn = &list["connections"][0];
    assert_eq!(conn["id"], alice.id.as_str());
    assert_eq!(conn["user_id"], "alice");
    assert_eq!(conn["roles"], json!(["admin", "ops"]));
    assert_eq!(
        conn["metadata"],
        json!({"email": "a@example.com", "tenant": {"id": 7}}),
        "registered claims (sub, exp, iat, roles) are not metadata"
    );
}

#[tokio::test]
async fn rejections_are_counted_by_reason_in_metrics() {
    let server = TestServer::start().await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("realtime_handshakes_rejected_total{reason=\"expired\"} 0\n"),
        "{metrics}"
    );
    let expired = with(claims("alice", &[]), "exp", json!(now() - 1));
    let t = sign_hs256(&expired, SECRET);
    assert_rejected(&server, server.handshake(Some(&t), None).await, "expired").await;
    assert_rejected(&server, server.handshake(None, None).await, "missing_token").await;
    assert_rejected(&server, server.handshake(None, None).await, "missing_token").await;
    let metrics = server.metrics_text().await;
    for line in [
        "realtime_handshakes_rejected_total{reason=\"expired\"} 1\n",
        "realtime_handshakes_rejected_total{reason=\"missing_token\"} 2\n",
        "realtime_handshakes_rejected_total{reason=\"bad_signature\"} 0\n",
        "realtime_connections_accepted_total 0\n",
        "realtime_connections 0\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_previous_secret_is_still_accepted_during_a_rotation() {
    let server = TestServer::start_with(Options {
        jwt_secret: Some("the-new-secret".into()),
        jwt_previous_secret: Some("the-old-secret".into()),
        ..options()
    })
    .await;
    for secret in ["the-new-secret", "the-old-secret"] {
        let signed = sign_hs256(&claims("rotating", &[]), secret);
        assert_accepted(server.handshake(Some(&signed), None).await, "rotating").await;
    }
    let other = sign_hs256(&claims("rotating", &[]), "some-other-secret");
    assert_token_rejected(&server, &other, "bad_signature").await;
}

#[test]
fn a_previous_secret_needs_hs256() {
    let o = Options {
        jwt_secret: None,
        jwt_public_key: Some(fixture("rsa-public.pem")),
        jwt_previous_secret: Some("old".into()),
        ..options()
    };
    assert!(o.resolve(|| "x".into()).is_err());
}

/// Signs `claims` with the fixture RSA or EC private key and puts `kid` in the header.
fn sign_with_kid(claims: &Value, algorithm: jsonwebtoken::Algorithm, kid: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.into());
    let key = match algorithm {
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap())
        }
        _ => EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()),
    };
    jsonwebtoken::encode(&header, claims, &key.unwrap()).unwrap()
}

#[tokio::test]
async fn jwks_keys_are_picked_by_kid() {
    use jsonwebtoken::Algorithm;
    let server = TestServer::start_with(Options {
        jwt_secret: None,
        jwt_jwks_file: Some(fixture("jwks.json")),
        ..options()
    })
    .await;
    let good = sign_with_kid(&claims("jwks-user", &[]), Algorithm::RS256, "rsa-2026");
    assert_accepted(server.handshake(Some(&good), None).await, "jwks-user").await;
    // No `kid`: every usable key is tried.
    assert_accepted(
        server
            .handshake(Some(&sign_rs256(&claims("no-kid", &[]))), None)
            .await,
        "no-kid",
    )
    .await;
    let unknown = sign_with_kid(&claims("jwks-user", &[]), Algorithm::RS256, "retired");
    assert_token_rejected(&server, &unknown, "unknown_key").await;
    // The encryption-only key with the same modulus is not a verification key.
    let enc = sign_with_kid(&claims("jwks-user", &[]), Algorithm::RS256, "rsa-enc");
    assert_token_rejected(&server, &enc, "unknown_key").await;
    // The EC key is in the file but the server is pinned to RS256.
    let ec = sign_with_kid(&claims("jwks-user", &[]), Algorithm::ES256, "ec-1");
    assert_token_rejected(&server, &ec, "invalid_algorithm").await;
}

#[tokio::test]
async fn jwks_serves_es256_when_pinned() {
    use jsonwebtoken::Algorithm;
    let server = TestServer::start_with(Options {
        jwt_secret: None,
        jwt_algorithm: Some("ES256".into()),
        jwt_jwks_file: Some(fixture("jwks.json")),
        ..options()
    })
    .await;
    let ec = sign_with_kid(&claims("ec-user", &[]), Algorithm::ES256, "ec-1");
    assert_accepted(server.handshake(Some(&ec), None).await, "ec-user").await;
    // A kid naming the RSA key: it was skipped as unusable for ES256.
    let wrong = sign_with_kid(&claims("ec-user", &[]), Algorithm::ES256, "rsa-2026");
    assert_token_rejected(&server, &wrong, "unknown_key").await;
}

#[test]
fn a_jwks_file_without_usable_keys_stops_the_server() {
    let dir = std::env::temp_dir().join(format!("rt-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("empty.json");
    std::fs::write(&path, r#"{"keys":[]}"#).unwrap();
    let settings = Options {
        jwt_secret: None,
        jwt_jwks_file: Some(path.clone()),
        ..options()
    }
    .resolve(|| "x".into())
    .unwrap();
    let err = realtime_server::app::build(&settings)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no key usable for RS256"), "{err}");
    std::fs::write(&path, "not json").unwrap();
    let err = realtime_server::app::build(&settings)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("JWKS"), "{err}");
}
