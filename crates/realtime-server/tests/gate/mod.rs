//! A TCP proxy in front of Redis that the test can close: a node behind it loses
//! Redis (its open connections are cut, new ones are dropped at once) while the
//! other nodes keep theirs, and gets it back when the gate opens again. The proxy
//! also cuts a node's connection as soon as Redis ends its side, so a Redis crash
//! looks the same to the node behind it as to the others.
#![allow(dead_code)]

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Gate {
    pub port: u16,
    open: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl Gate {
    /// Listens on a free port and forwards to `127.0.0.1:upstream`, open.
    pub async fn start(upstream: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, is_open) = watch::channel(true);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, is_open.clone()));
            }
        });
        Gate {
            port,
            open,
            accepting,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts every open connection and drops new ones until [`Gate::open`].
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn forward(client: TcpStream, upstream: u16, mut open: watch::Receiver<bool>) {
    if !*open.borrow_and_update() {
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Whichever ends first ends both: returning drops (closes) both sockets.
    tokio::select! {
        _ = tokio::io::copy(&mut from_client, &mut to_server) => {}
        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
        _ = open.wait_for(|o| !*o) => {}
    }
}
