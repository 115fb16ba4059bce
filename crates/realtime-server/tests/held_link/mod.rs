//! A TCP proxy in front of Redis that, once armed, holds every chunk carrying a
//! SUBSCRIBE (and what follows it on that connection, to keep the order) until
//! the test releases it, and counts the chunks it held and those carrying an
//! EVALSHA with a given text: a node behind it resubscribes only when the test
//! says so, while its other commands (history reads included) go through.
#![allow(dead_code)]

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

struct Shared {
    /// Whether SUBSCRIBE chunks are held.
    armed: watch::Sender<bool>,
    /// SUBSCRIBE chunks held since the proxy was armed.
    held: watch::Sender<usize>,
    /// EVALSHA chunks containing `watched` that passed since the proxy was armed.
    evals: watch::Sender<usize>,
    watched: Vec<u8>,
}

pub struct HeldLink {
    pub port: u16,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

impl HeldLink {
    /// Listens on a free port and forwards to `127.0.0.1:upstream`, counting the
    /// EVALSHA chunks that contain `watched`.
    pub async fn start(upstream: u16, watched: &str) -> HeldLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            armed: watch::channel(false).0,
            held: watch::channel(0).0,
            evals: watch::channel(0).0,
            watched: watched.as_bytes().to_vec(),
        });
        let accepting = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, upstream, shared.clone()));
                }
            }
        });
        HeldLink {
            port,
            shared,
            accepting,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on SUBSCRIBE chunks wait for [`release`](Self::release); the counts start at 0.
    pub fn arm(&self) {
        self.shared.held.send_replace(0);
        self.shared.evals.send_replace(0);
        self.shared.armed.send_replace(true);
    }

    /// Lets every held chunk go, and holds nothing more.
    pub fn release(&self) {
        self.shared.armed.send_replace(false);
    }

    /// Waits (at most `bound`) until at least `n` SUBSCRIBE chunks are held.
    pub async fn held(&self, n: usize, bound: std::time::Duration) {
        let mut held = self.shared.held.subscribe();
        tokio::time::timeout(bound, held.wait_for(|h| *h >= n))
            .await
            .expect("a SUBSCRIBE reached the proxy in time")
            .unwrap();
    }

    /// Waits (at most `bound`) until at least `n` watched EVALSHA chunks passed.
    pub async fn evals(&self, n: usize, bound: std::time::Duration) {
        let mut evals = self.shared.evals.subscribe();
        tokio::time::timeout(bound, evals.wait_for(|e| *e >= n))
            .await
            .expect("the watched EVALSHA passed the proxy in time")
            .unwrap();
    }
}

impl Drop for HeldLink {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

async fn forward(client: TcpStream, upstream: u16, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Chunks keep their order: one held SUBSCRIBE holds everything behind it.
    let (queue, mut queued) = mpsc::unbounded_channel::<(bool, Vec<u8>)>();
    let read = {
        let shared = shared.clone();
        async move {
            let mut buf = vec![0; 16 * 1024];
            while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                let chunk = buf[..n].to_vec();
                let hold = *shared.armed.borrow() && contains(&chunk, b"SUBSCRIBE");
                if hold {
                    shared.held.send_modify(|h| *h += 1);
                }
                if *shared.armed.borrow()
                    && contains(&chunk, b"EVALSHA")
                    && contains(&chunk, &shared.watched)
                {
                    shared.evals.send_modify(|e| *e += 1);
                }
                if queue.send((hold, chunk)).is_err() {
                    break;
                }
            }
        }
    };
    let write = async move {
        let mut armed = shared.armed.subscribe();
        while let Some((hold, bytes)) = queued.recv().await {
            if hold {
                let _ = armed.wait_for(|a| !*a).await;
            }
            if to_server.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let back = async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    };
    tokio::join!(read, write, back);
}
