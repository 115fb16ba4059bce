//! Real processes for the multi-node tests: a private `redis-server` on a free port
//! (stoppable and restartable) and `realtime-server` binaries pointed at it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Upper bound for a process to come up.
pub const START: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls another process's state until `check` passes. Across processes there is
/// no event to await, so this looks every 20 ms; `bound` is only an upper limit.
pub async fn eventually<F, Fut>(bound: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + bound;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`eventually`], for a value read from another process that must come to
/// equal `want`; a failure shows the last value read.
pub async fn eventually_eq<T, F, Fut>(bound: Duration, what: &str, want: T, mut read: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = std::time::Instant::now() + bound;
    loop {
        let got = read().await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {bound:?}: want {want:?}, last read {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `redis-server` owned by the test. Its data lives only in memory.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port. A missing binary fails the test: a
    /// multi-node test must never pass without Redis.
    pub async fn start() -> RedisServer {
        Self::start_with_args(&[]).await
    }

    /// Starts `redis-server` on `port`, e.g. one a node was told to use before
    /// anything listened there.
    pub async fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.restart_with_args(&[]).await;
    }

    /// Starts `redis-server` on a free port with `extra` arguments after the
    /// defaults (later arguments win), e.g. `["--appendonly", "yes", "--appendfsync",
    /// "always", "--dir", dir]` for a server whose restart loses nothing.
    pub async fn start_with_args(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart_with_args(extra).await;
        server
    }

    /// As [`RedisServer::restart`], with `extra` arguments after the defaults.
    pub async fn restart_with_args(&mut self, extra: &[&str]) {
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (it is on PATH in CI; see .ci/run)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::time::timeout(START, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("Ready to accept connections") {
                    return;
                }
            }
            panic!("redis-server exited before it was ready");
        })
        .await
        .expect("redis-server ready in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// A `realtime-server` process.
pub struct Node {
    pub addr: SocketAddr,
    pub node_id: String,
    child: Child,
    /// Every line the node logged so far, so tests can await what it reports.
    log: watch::Receiver<Vec<String>>,
}

impl Node {
    /// Starts the binary with the Redis provider and waits until it listens.
    pub async fn start(redis_url: &str, node_id: &str, extra: &[(&str, &str)]) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_realtime-server"));
        command
            .env_clear()
            .env("REALTIME_LISTEN", "127.0.0.1:0")
            .env("REALTIME_JWT_SECRET", crate::common::SECRET)
            .env("REALTIME_API_KEY", crate::common::API_KEY)
            .env("REALTIME_PROVIDER", "redis")
            .env("REALTIME_REDIS_URL", redis_url)
            .env("REALTIME_NODE_ID", node_id)
            .env("REALTIME_REDIS_PREFIX", "rt-test")
            .env("REALTIME_CLUSTER_HEARTBEAT", "200ms")
            .env("REALTIME_SHUTDOWN_TIMEOUT", "2s")
            .env("REALTIME_LOG", "info");
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("realtime-server starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (logged, log) = watch::channel(Vec::new());
        let addr = tokio::time::timeout(START, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                logged.send_modify(|log| log.push(line.clone()));
                if let Some(rest) = line.split(" addr=").nth(1) {
                    return rest
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap();
                }
            }
            panic!("realtime-server exited before listening");
        })
        .await
        .expect("realtime-server listening in time");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                logged.send_modify(|log| log.push(line));
            }
        });
        Node {
            addr,
            node_id: node_id.to_owned(),
            child,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={}", self.addr, token)
    }

    /// How many lines the node has logged: a mark for [`Node::wait_for_log`].
    pub fn log_mark(&self) -> usize {
        self.log.borrow().len()
    }

    /// Waits (bounded by `START`) until a line logged after `mark` contains every
    /// one of `parts`.
    pub async fn wait_for_log(&mut self, mark: usize, parts: &[&str]) {
        self.wait_for_log_within(mark, parts, START).await;
    }

    /// As [`Node::wait_for_log`], bounded by `bound` instead of `START` (for
    /// reconnects after a fault on a loaded machine).
    pub async fn wait_for_log_within(&mut self, mark: usize, parts: &[&str], bound: Duration) {
        let found = |log: &Vec<String>| {
            log.iter()
                .skip(mark)
                .any(|line| parts.iter().all(|p| line.contains(p)))
        };
        let waited = tokio::time::timeout(bound, self.log.wait_for(found))
            .await
            .is_ok_and(|r| r.is_ok());
        let log = self.log.borrow();
        assert!(
            waited,
            "node {} did not log {parts:?} within {bound:?}; it logged {:#?}",
            self.node_id,
            &log[mark.min(log.len())..]
        );
    }

    /// Kills the node without any cleanup (SIGKILL).
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Asks the node to shut down gracefully (SIGTERM), as an orchestrator does.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("node still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.unwrap()
    }
}

/// A [`RedisServer`] that keeps its extra arguments, so every restart gets the
/// same ones and finds what the previous process persisted; a durable one keeps
/// its files in a directory of its own, removed when this is dropped.
pub struct RedisWithArgs {
    pub port: u16,
    server: RedisServer,
    args: Vec<String>,
    dir: Option<std::path::PathBuf>,
}

impl RedisWithArgs {
    /// Data only in memory: a restart comes back empty.
    pub async fn volatile() -> RedisWithArgs {
        Self::start(Vec::new(), None).await
    }

    /// Every write reaches the append-only file before Redis answers it
    /// (`appendfsync always`), so a SIGKILL loses nothing Redis acknowledged.
    pub async fn durable() -> RedisWithArgs {
        let dir =
            std::env::temp_dir().join(format!("rt-redis-aof-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = ["--appendonly", "yes", "--appendfsync", "always", "--dir"]
            .into_iter()
            .map(str::to_owned)
            .chain([dir.to_str().unwrap().to_owned()])
            .collect();
        Self::start(args, Some(dir)).await
    }

    async fn start(args: Vec<String>, dir: Option<std::path::PathBuf>) -> RedisWithArgs {
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = RedisServer::start_with_args(&extra).await;
        RedisWithArgs {
            port: server.port,
            server,
            args,
            dir,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// (Re)starts the server on the same port with the same arguments and waits
    /// until it accepts connections (after loading what it persisted, if anything).
    pub async fn restart(&mut self) {
        let extra: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server.restart_with_args(&extra).await;
    }

    /// Kills the server (SIGKILL: no goodbye to its clients, no final write).
    pub async fn kill(&mut self) {
        self.server.kill().await;
    }
}

impl Drop for RedisWithArgs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TOML file for `REALTIME_CONFIG`, removed when dropped.
pub struct ConfigFile {
    pub path: std::path::PathBuf,
}

impl ConfigFile {
    pub fn write(toml: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "rt-config-{}-{}.toml",
            std::process::id(),
            unique()
        ));
        std::fs::write(&path, toml).unwrap();
        ConfigFile { path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A number no other call in this process gets, for file names.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
