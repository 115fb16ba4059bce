//! Tokens and message contents never reach the logs: a real `realtime-server`
//! process, under each `REALTIME_LOG` spec that turns up the WebSocket and HTTP
//! crates, is handed tokens in the query string, in the Authorization header, in
//! a rejected handshake and in a `refresh`, plus the API key, and sends a message
//! whose body is secret; none of them appears in anything it writes, as text or
//! as the hex the frame dumps use, while the redacted request lines do.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;

/// Every line the process wrote so far, and a signal for each new one.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    added: Notify,
}

/// Collects every line `reader` yields into `sink`.
fn collect(
    reader: impl AsyncRead + Unpin + Send + 'static,
    sink: Arc<Output>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lines.lock().unwrap().push(line);
            sink.added.notify_waiters();
        }
    })
}

#[tokio::test]
async fn no_token_or_key_is_ever_logged_even_at_trace() {
    let lines = assert_no_secret_logged("trace").await;
    let all = lines.join("\n");
    assert!(all.contains(" TRACE "), "trace logging is on:\n{all}");
    assert!(
        all.contains("token=[redacted]"),
        "request lines are logged, redacted:\n{all}"
    );
}

// Each spec that names a WebSocket crate, one of its modules or the HTTP stack
// directly: a more specific directive must not lift the cap on frame contents.
// `info` first, so the listening line (how the test finds the port) is logged.

#[tokio::test]
async fn nothing_secret_is_logged_with_tungstenite_at_trace() {
    assert_no_secret_logged("info,tungstenite=trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_with_tungstenite_protocol_at_trace() {
    assert_no_secret_logged("info,tungstenite::protocol=trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_with_tungstenite_frames_at_trace() {
    assert_no_secret_logged("debug,tungstenite::protocol::frame=trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_with_tokio_tungstenite_at_trace() {
    assert_no_secret_logged("info,tokio_tungstenite=trace,tokio_tungstenite::compat=trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_with_axum_websockets_at_trace() {
    assert_no_secret_logged("info,axum::extract::ws=trace,axum=trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_with_hyper_at_trace() {
    assert_no_secret_logged("info,hyper=trace,hyper_util=trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_with_trace_everywhere_spelled_twice() {
    assert_no_secret_logged("trace,tungstenite::protocol=trace,tungstenite=trace").await;
}

/// Runs a server logging with `spec`, hands it every kind of secret, stops it and
/// asserts none of them is in its output; returns the lines it wrote.
async fn assert_no_secret_logged(spec: &str) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .env_clear()
        .env("REALTIME_LISTEN", "127.0.0.1:0")
        .env("REALTIME_JWT_SECRET", SECRET)
        .env("REALTIME_API_KEY", API_KEY)
        .env("REALTIME_LOG", spec)
        .env("REALTIME_SHUTDOWN_TIMEOUT", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("realtime-server starts");
    let output = Arc::new(Output::default());
    let out = collect(child.stdout.take().unwrap(), output.clone());
    let err = collect(child.stderr.take().unwrap(), output.clone());
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let added = output.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let found = output.lines.lock().unwrap().iter().find_map(|l| {
                let rest = l.split(" addr=").nth(1)?;
                rest.split_whitespace()
                    .next()?
                    .parse::<std::net::SocketAddr>()
                    .ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            added.await;
        }
    })
    .await
    .expect("listening in time");

    let in_query = token("logged-user", &[]);
    let in_header = token("header-user", &[]);
    let rejected = sign_hs256(&claims("rejected-user", &[]), "wrong-secret");
    let refreshed = token("logged-user", &[]);
    let body_secret = format!("body-secret-{}", std::process::id());
    let mut secrets = vec![
        body_secret.clone(),
        in_query.clone(),
        in_header.clone(),
        rejected.clone(),
        refreshed.clone(),
        API_KEY.to_owned(),
        SECRET.to_owned(),
    ];
    // Each signature on its own too: a log that cut a token up would still leak it.
    for t in [&in_query, &in_header, &rejected, &refreshed] {
        secrets.push(t.rsplit('.').next().unwrap().to_owned());
    }

    let ws = |t: &str| format!("ws://{addr}/ws?token={t}");
    let mut client = Client::connect(&ws(&in_query)).await;
    assert_eq!(client.recv().await["type"], "welcome");
    let reply = client
        .command(json!({"action": "refresh", "token": refreshed, "ref": 1}))
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    let bearer = format!("Bearer {in_header}");
    match Client::try_connect(&format!("ws://{addr}/ws"), Some(&bearer)).await {
        Handshake::Accepted(mut c) => assert_eq!(c.recv().await["type"], "welcome"),
        Handshake::Refused(s, b) => panic!("{s} {b}"),
    }
    match Client::try_connect(&ws(&rejected), None).await {
        Handshake::Refused(status, body) => {
            assert_eq!(status, 401);
            assert!(!body.to_string().contains(&rejected));
        }
        Handshake::Accepted(_) => panic!("accepted a token signed with another secret"),
    }
    let http = reqwest::Client::new();
    let (status, _) = answer(
        http.post(format!("http://{addr}/api/broadcast?token={in_query}"))
            .bearer_auth(API_KEY)
            .json(&json!({"type": "note", "secret": body_secret})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(client.recv().await["secret"], body_secret.as_str());
    drop(client);

    // SIGTERM: a graceful stop flushes the log writers.
    let pid = child.id().expect("running") as i32;
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    out.await.unwrap();
    err.await.unwrap();

    let lines = output.lines.lock().unwrap().clone();
    assert!(!lines.is_empty(), "{spec}: the server logged");
    for secret in &secrets {
        // Frame dumps print payloads as hex.
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let leaks: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(secret.as_str()) || l.contains(&hex))
            .collect();
        assert!(
            leaks.is_empty(),
            "{spec}: {secret} leaked into the logs: {leaks:#?}"
        );
    }
    lines
}
