//! A TCP proxy in front of Redis that holds every chunk carrying a SUBSCRIBE for
//! a fixed time before passing it on (and what follows it on that connection, to
//! keep the order): a node behind it learns of new channels late, while its other
//! commands (the directory's) go through at once. That widens the window between
//! its SUBSCRIBE and another node's PUBLISH.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct SlowLink {
    pub port: u16,
    accepting: JoinHandle<()>,
}

impl SlowLink {
    /// Listens on a free port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16, delay: Duration) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, delay));
            }
        });
        SlowLink { port, accepting }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn forward(client: TcpStream, upstream: u16, delay: Duration) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    // Without these, Nagle's algorithm adds delays of its own to small commands.
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Chunks keep their order; a SUBSCRIBE leaves `delay` after it arrived.
    let (held, mut release) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0; 16 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            let chunk = buf[..n].to_vec();
            let subscribes = chunk.windows(9).any(|w| w == b"SUBSCRIBE");
            let due = Instant::now() + if subscribes { delay } else { Duration::ZERO };
            if held.send((due, chunk)).is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = release.recv().await {
            tokio::time::sleep_until(due).await;
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
