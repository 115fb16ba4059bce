//! Development mode, against the real binary: entered only when no key material and
//! no API key is configured in any source (the config file included), refused on a
//! non-loopback address unless allowed, and then still answering `/dev/token` only
//! to loopback `Host`s.

mod binary;

use binary::{Started, request, start};

fn scratch_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rt-development-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn jwks() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwks.json")
        .display()
        .to_string()
}

#[tokio::test]
async fn a_config_file_naming_only_a_jwks_file_is_not_development_mode() {
    let only_jwks = scratch_file(
        "only-jwks.toml",
        &format!("listen = \"127.0.0.1:0\"\njwt_jwks_file = {:?}\n", jwks()),
    );
    let (code, stderr) = start(&[("REALTIME_CONFIG", only_jwks.to_str().unwrap())], &[])
        .await
        .refused();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("REALTIME_API_KEY is required"), "{stderr}");

    let with_key = scratch_file(
        "jwks-and-key.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\njwt_jwks_file = {:?}\napi_key = \"file-key\"\n",
            jwks()
        ),
    );
    let server = start(&[], &["--config", with_key.to_str().unwrap()])
        .await
        .listening();
    let (status, body) = request(
        server.local(),
        "GET",
        "/dev/token",
        &["Host: 127.0.0.1"],
        "",
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (404, &serde_json::json!("not_found"))
    );
    // The key from the file is the API key.
    let (status, _) = request(
        server.local(),
        "GET",
        "/api/stats",
        &["Host: 127.0.0.1", "Authorization: Bearer file-key"],
        "",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_api_key_without_a_token_key_is_refused_not_development_mode() {
    for env in [
        [
            ("REALTIME_API_KEY", "k"),
            ("REALTIME_LISTEN", "127.0.0.1:0"),
        ],
        [
            ("REALTIME_JWT_PREVIOUS_SECRET", "old"),
            ("REALTIME_LISTEN", "127.0.0.1:0"),
        ],
    ] {
        let (code, stderr) = start(&env, &[]).await.refused();
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains("REALTIME_JWT_SECRET"), "{env:?}: {stderr}");
    }
}

#[tokio::test]
async fn development_mode_refuses_a_public_address_unless_allowed() {
    let (code, stderr) = start(&[("REALTIME_LISTEN", "0.0.0.0:0")], &[])
        .await
        .refused();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(
        stderr.contains("REALTIME_ALLOW_REMOTE_DEVELOPMENT"),
        "{stderr}"
    );

    let Started::Listening(server) = start(
        &[("REALTIME_LISTEN", "0.0.0.0:0")],
        &["--allow-remote-development"],
    )
    .await
    else {
        panic!("allowed remote development must start");
    };
    let port = server.addr.port();
    let (status, body) = request(
        server.local(),
        "GET",
        "/dev/token",
        &[&format!("Host: localhost:{port}")],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["api_key"].is_string());
    // Reachable from the network, but a page on another name gets nothing.
    let (status, body) = request(
        server.local(),
        "GET",
        "/dev/token",
        &[&format!("Host: rebound.example:{port}")],
        "",
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (403, &serde_json::json!("forbidden_host"))
    );
}
