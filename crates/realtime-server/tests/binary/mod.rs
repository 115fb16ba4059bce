//! The real `realtime-server` binary started with exactly the environment,
//! arguments and config file a test gives, and raw HTTP/1.1 requests whose
//! headers (`Host` included) are exactly what the test writes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Upper bound for the binary to listen or exit.
pub const START: Duration = Duration::from_secs(15);

/// How a start attempt ended.
pub enum Started {
    Listening(Box<Running>),
    /// The process exited before listening, with its stderr.
    Exited {
        code: Option<i32>,
        stderr: String,
    },
}

/// A listening `realtime-server`, killed when dropped.
pub struct Running {
    /// Where it listens (as logged; `0.0.0.0` when bound to every interface).
    pub addr: SocketAddr,
    child: Child,
    /// Every line it logged after listening, so tests can await what it reports.
    log: watch::Receiver<Vec<String>>,
}

impl Running {
    /// The address a client on this machine connects to.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.addr.port()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.local(), path)
    }

    /// Waits (bounded by `START`) until a line it logged contains every one of
    /// `parts`.
    pub async fn wait_for_log(&mut self, parts: &[&str]) {
        let found = |log: &Vec<String>| {
            log.iter()
                .any(|line| parts.iter().all(|p| line.contains(p)))
        };
        let waited = tokio::time::timeout(START, self.log.wait_for(found))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            waited,
            "did not log {parts:?}; it logged {:#?}",
            *self.log.borrow()
        );
    }
}

impl Started {
    pub fn listening(self) -> Running {
        match self {
            Started::Listening(running) => *running,
            Started::Exited { code, stderr } => {
                panic!("realtime-server exited ({code:?}) instead of listening: {stderr}")
            }
        }
    }

    /// The exit code and stderr of a start that must fail.
    pub fn refused(self) -> (Option<i32>, String) {
        match self {
            Started::Exited { code, stderr } => (code, stderr),
            Started::Listening(running) => {
                panic!(
                    "realtime-server started on {} instead of refusing",
                    running.addr
                )
            }
        }
    }
}

/// Starts the binary with only `env` in its environment and `args`, and waits
/// until it either listens or exits.
pub async fn start(env: &[(&str, &str)], args: &[&str]) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("realtime-server starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    let addr = tokio::time::timeout(START, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split(" addr=").nth(1) {
                return rest.split_whitespace().next()?.parse::<SocketAddr>().ok();
            }
            stderr.push_str(&line);
            stderr.push('\n');
        }
        None
    })
    .await
    .expect("realtime-server listens or exits in time");
    match addr {
        Some(addr) => {
            let (logged, log) = watch::channel(Vec::new());
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    logged.send_modify(|log| log.push(line));
                }
            });
            Started::Listening(Box::new(Running { addr, child, log }))
        }
        None => {
            let status = tokio::time::timeout(START, child.wait())
                .await
                .expect("realtime-server exits in time")
                .unwrap();
            Started::Exited {
                code: status.code(),
                stderr,
            }
        }
    }
}

/// `method path` over a fresh TCP connection with exactly `headers` (e.g.
/// `["Host: evil.example"]`) and `body`; returns the status and the JSON body
/// (`Null` when it is not JSON).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, Value) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(START, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
