//! Graceful shutdown: every connection hears `server-shutdown` and is closed with
//! 1001, new connections are refused, and the real binary exits on SIGTERM.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn expect_shutdown_close(client: &mut Client) {
    let (frame, seen) = client.recv_close().await;
    let types: Vec<&str> = seen.iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(types, ["server-shutdown"], "frames before close: {seen:?}");
    assert!(seen[0]["timestamp"].is_string());
    let frame = frame.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1001);
}

#[tokio::test]
async fn shutdown_notifies_and_closes_every_connection() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    let rt = server.rt.clone();

    let shutdown = tokio::spawn(server.shutdown());
    expect_shutdown_close(&mut a).await;
    expect_shutdown_close(&mut b).await;
    assert!(
        shutdown.await.unwrap(),
        "all connections closed within the timeout"
    );
    assert_eq!(rt.connection_count(), 0);
    assert!(!rt.is_accepting());
    // The listener is gone: a new connection cannot even open TCP.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_binary_shuts_down_gracefully_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .env_clear()
        .env("REALTIME_LISTEN", "127.0.0.1:0")
        .env("REALTIME_JWT_SECRET", SECRET)
        .env("REALTIME_API_KEY", API_KEY)
        .env("REALTIME_SHUTDOWN_TIMEOUT", "5s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server announces its address");

    let mut client =
        Client::connect(&format!("ws://{addr}/ws?token={}", token("carol", &[]))).await;
    let welcome: Value = client.recv().await;
    assert_eq!(welcome["type"], "welcome");

    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());

    expect_shutdown_close(&mut client).await;
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
