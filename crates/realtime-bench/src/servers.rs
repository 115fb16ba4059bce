//! The servers under test, each a child process the generator starts, watches
//! through /proc and stops: our `realtime-server` (one node, or several sharing a
//! private `redis-server`), the `realtime-ceiling` bare axum fan-out, and the
//! Socket.IO 4 peer on Node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The HS256 secret the generator signs tokens with and starts our server with.
pub const JWT_SECRET: &str = "realtime-bench-secret-0123456789abcdef";
/// The API key the generator publishes with.
pub const API_KEY: &str = "realtime-bench-api-key";
/// Upper bound for a process to come up.
const START: Duration = Duration::from_secs(30);

/// Which server a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Realtime,
    Ceiling,
    SocketIo,
}

impl Kind {
    /// The name used in records: `realtime`, `ceiling` or `socketio`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Realtime => "realtime",
            Kind::Ceiling => "ceiling",
            Kind::SocketIo => "socketio",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Kind> {
        Ok(match name {
            "realtime" => Kind::Realtime,
            "ceiling" => Kind::Ceiling,
            "socketio" => Kind::SocketIo,
            other => bail!("unknown server `{other}` (realtime, ceiling, socketio)"),
        })
    }
}

/// A running server process. Killed when dropped.
pub struct ServerProcess {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Where the binaries and scripts live.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub realtime: PathBuf,
    pub ceiling: PathBuf,
    pub socketio_dir: PathBuf,
}

impl Binaries {
    /// The server binaries next to this executable. When run through `cargo run`,
    /// builds them first with the same profile, so a run never measures a stale
    /// binary.
    pub fn locate() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("executable has no directory")?;
        if let Ok(cargo) = std::env::var("CARGO") {
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = std::process::Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "realtime-server",
                "--bin",
                "realtime-server",
            ])
            .args(["-p", "realtime-bench", "--bin", "realtime-ceiling"]);
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().context("building the servers under test")?;
            if !status.success() {
                bail!("building the servers under test failed");
            }
        }
        let bins = Binaries {
            realtime: dir.join("realtime-server"),
            ceiling: dir.join("realtime-ceiling"),
            socketio_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/socketio"),
        };
        for bin in [&bins.realtime, &bins.ceiling] {
            if !bin.exists() {
                bail!(
                    "{} not found: build it with `cargo build --release -p realtime-server -p realtime-bench`",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }

    /// Starts one of our nodes; `redis` makes it join that Redis cluster.
    pub async fn realtime(
        &self,
        redis: Option<&str>,
        node_id: &str,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(&self.realtime);
        cmd.env("REALTIME_LISTEN", "127.0.0.1:0")
            .env("REALTIME_JWT_SECRET", JWT_SECRET)
            .env("REALTIME_API_KEY", API_KEY)
            .env("REALTIME_NODE_ID", node_id)
            .env("REALTIME_LOG", "info")
            .env_remove("REALTIME_DEV")
            .env_remove("REALTIME_CONFIG");
        match redis {
            Some(url) => cmd
                .env("REALTIME_PROVIDER", "redis")
                .env("REALTIME_REDIS_URL", url),
            None => cmd.env("REALTIME_PROVIDER", "memory"),
        };
        cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
        // The server logs `... listening addr=127.0.0.1:PORT ...` on stderr.
        spawn(Kind::Realtime, cmd, Stream::Stderr, |line| {
            line.contains("listening")
                .then(|| line.split("addr=").nth(1))
                .flatten()
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        })
        .await
    }

    /// Starts the bare axum ceiling.
    pub async fn ceiling(&self) -> anyhow::Result<ServerProcess> {
        let cmd = Command::new(&self.ceiling);
        spawn(Kind::Ceiling, cmd, Stream::Stdout, listening_line).await
    }

    /// Installs (once) and starts the Socket.IO peer.
    pub async fn socketio(&self) -> anyhow::Result<ServerProcess> {
        let status = Command::new(self.socketio_dir.join("install.sh"))
            .stdout(Stdio::null())
            .status()
            .await
            .context("running peer/socketio/install.sh (needs node and npm)")?;
        if !status.success() {
            bail!("installing the Socket.IO peer failed");
        }
        let mut cmd = Command::new("node");
        cmd.arg(self.socketio_dir.join("server.js"))
            .env("PORT", "0");
        spawn(Kind::SocketIo, cmd, Stream::Stdout, listening_line).await
    }
}

/// Parses `listening 127.0.0.1:PORT`.
fn listening_line(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("listening ")?.trim().parse().ok()
}

enum Stream {
    Stdout,
    Stderr,
}

async fn spawn(
    kind: Kind,
    mut cmd: Command,
    stream: Stream,
    ready: impl Fn(&str) -> Option<SocketAddr>,
) -> anyhow::Result<ServerProcess> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    // Watch one stream for the ready line; drain the other so it never blocks.
    let mut watched: tokio::io::Lines<BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>> =
        match stream {
            Stream::Stdout => {
                drain(stderr);
                BufReader::new(Box::new(stdout) as _).lines()
            }
            Stream::Stderr => {
                drain(stdout);
                BufReader::new(Box::new(stderr) as _).lines()
            }
        };
    // The last lines before the ready line, to say why a process that exits
    // early (a refused configuration) did.
    let mut last = std::collections::VecDeque::new();
    let found = tokio::time::timeout(START, async {
        while let Some(line) = watched.next_line().await? {
            let line = strip_ansi(&line);
            if let Some(addr) = ready(&line) {
                return Ok(Some(addr));
            }
            if last.len() == 5 {
                last.pop_front();
            }
            last.push_back(line);
        }
        Ok::<_, std::io::Error>(None)
    })
    .await;
    let addr = match found {
        Ok(Ok(Some(addr))) => addr,
        Ok(Ok(None)) => bail!(
            "{} exited before it was ready: {}",
            kind.name(),
            Vec::from(last).join(" | ")
        ),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => bail!("{} did not come up within {START:?}", kind.name()),
    };
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = watched.next_line().await {} });
    Ok(ServerProcess { kind, addr, child })
}

fn drain(reader: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A private `redis-server` on a free port, for multi-node scenarios.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub async fn start() -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (install the redis-server package)")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        tokio::time::timeout(START, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Ready to accept connections") {
                    return Ok(());
                }
            }
            bail!("redis-server exited before it was ready")
        })
        .await
        .context("redis-server did not come up")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Redis { port, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// How many connections our server closed as slow consumers (3008), read from its
/// Prometheus `/metrics`.
pub async fn slow_consumer_closes(node: SocketAddr) -> Option<u64> {
    metric_sum(node, "realtime_disconnects_total{reason=\"slow_consumer\"}").await
}

/// How many connections of `transport` (`websocket`, `sse`) our server holds,
/// from its `realtime_connections_by_transport` gauge.
pub async fn connections_by_transport(node: SocketAddr, transport: &str) -> Option<u64> {
    let series = format!("realtime_connections_by_transport{{transport=\"{transport}\"}}");
    metric_sum(node, &series).await
}

/// The sum of the samples of one series (name and labels exactly as exported)
/// in our server's `/metrics`; `None` when it cannot be read or is absent.
async fn metric_sum(node: SocketAddr, series: &str) -> Option<u64> {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let uri = format!("http://{node}/metrics").parse().ok()?;
    let response = client.get(uri).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let text = std::str::from_utf8(&body).ok()?;
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(series))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() as u64)
}
