//! A real WebSocket client that keeps reading in the background and records every
//! frame, so a test can send commands and at the same time await pushed frames
//! (`join`, `leave`) with a bound longer than a plain `recv`.

use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{Client, WAIT, token};
use crate::processes::Node;

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// Every text frame received so far, and whether the socket ended.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    pub frames: Vec<Value>,
    pub ended: bool,
}

pub struct Peer {
    pub user: String,
    /// From the welcome.
    pub connection_id: String,
    sink: Sink,
    frames: watch::Receiver<Frames>,
    next_ref: u64,
    reader: JoinHandle<()>,
}

impl Peer {
    /// Connects `user` to `node` and waits for the welcome.
    pub async fn connect(node: &Node, user: &str) -> Peer {
        let client = Client::connect(&node.ws_url(&token(user, &[]))).await;
        let (sink, mut stream) = client.ws.split();
        let (sender, frames) = watch::channel(Frames::default());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(text) = msg {
                    let frame: Value = serde_json::from_str(&text).expect("JSON text frame");
                    sender.send_modify(|f| f.frames.push(frame));
                }
            }
            sender.send_modify(|f| f.ended = true);
        });
        let mut peer = Peer {
            user: user.to_owned(),
            connection_id: String::new(),
            sink,
            frames,
            next_ref: 0,
            reader,
        };
        let welcome = peer
            .wait_for(WAIT, "welcome", |f| f["type"] == "welcome")
            .await;
        peer.connection_id = welcome["connection_id"].as_str().unwrap().to_owned();
        peer
    }

    /// Sends `frame` with a fresh `ref` and returns the frame answering it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_ref += 1;
        let r = format!("r{}", self.next_ref);
        frame["ref"] = json!(r);
        self.sink
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("socket open");
        self.wait_for(WAIT, &format!("the answer to {frame}"), |f| f["ref"] == r)
            .await
    }

    pub async fn subscribe(&mut self, topic: &str) {
        let reply = self
            .request(json!({"action": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply["type"], "subscribed", "subscribe {topic}: {reply}");
    }

    pub async fn unsubscribe(&mut self, topic: &str) {
        let reply = self
            .request(json!({"action": "unsubscribe", "topic": topic}))
            .await;
        assert_eq!(
            reply["type"], "unsubscribed",
            "unsubscribe {topic}: {reply}"
        );
    }

    /// The `presence` answer for `topic`, one page.
    pub async fn presence(&mut self, topic: &str, limit: u64, cursor: Option<&str>) -> Value {
        let mut frame = json!({"action": "presence", "topic": topic, "limit": limit});
        if let Some(c) = cursor {
            frame["cursor"] = json!(c);
        }
        self.request(frame).await
    }

    pub async fn presence_stats(&mut self, topic: &str) -> Value {
        self.request(json!({"action": "presence_stats", "topic": topic}))
            .await
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Value> {
        self.frames.borrow().frames.clone()
    }

    /// Frames of `kind` (`join`, `leave`) on `topic` received so far.
    pub fn pushed(&self, kind: &str, topic: &str) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| f["type"] == kind && f["topic"] == topic)
            .collect()
    }

    /// Waits (at most `bound`) for a frame matching `check`; returns the first.
    pub async fn wait_for(
        &self,
        bound: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut frames = self.frames.clone();
        let found = tokio::time::timeout(
            bound,
            frames.wait_for(|f| f.ended || f.frames.iter().any(&check)),
        )
        .await;
        let seen = self.frames.borrow().clone();
        match (found, seen.frames.iter().find(|f| check(f))) {
            (_, Some(frame)) => frame.clone(),
            _ => panic!(
                "{} ({}): {what}: not within {bound:?} (socket ended: {}); got {:#?}",
                self.user, self.connection_id, seen.ended, seen.frames
            ),
        }
    }

    /// Waits (at most `bound`) until the frames received satisfy `check`.
    pub async fn wait_until(&self, bound: Duration, what: &str, check: impl Fn(&[Value]) -> bool) {
        let mut frames = self.frames.clone();
        let waited = tokio::time::timeout(bound, frames.wait_for(|f| check(&f.frames)))
            .await
            .is_ok();
        assert!(
            waited,
            "{} ({}): {what}: not within {bound:?}; got {:#?}",
            self.user,
            self.connection_id,
            self.frames()
        );
    }

    /// Closes the socket with a close handshake (a page being closed) and waits
    /// until the server answered it.
    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let mut frames = self.frames.clone();
        let _ = tokio::time::timeout(WAIT, frames.wait_for(|f| f.ended)).await;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
