//! The presence questions the benchmarks ask, over both ways in: a WebSocket
//! connection sending `presence` / `presence_stats` commands one at a time
//! (each answer matched by its `ref`), and HTTP GETs on the presence API. Each
//! answer comes with its round trip, timed from the send to the answer's
//! arrival (before it is parsed).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, ConnSpec, HANDSHAKE, Socket};
use crate::servers::{API_KEY, Kind};

/// A topic's counts: the `presence_stats` frame or the stats endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    pub connections: u64,
    pub users: u64,
    #[serde(default)]
    pub degraded: bool,
}

/// One page of a topic's members.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    pub users: Vec<PageUser>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub degraded: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageUser {
    pub user_id: String,
    pub connections: Vec<PageConnection>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageConnection {
    pub connection_id: String,
}

impl Page {
    /// Connections listed on the page.
    pub fn connections(&self) -> usize {
        self.users.iter().map(|u| u.connections.len()).sum()
    }
}

/// An answer the server refused: the error code it gave.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server answered error `{code}`: {message}")]
pub struct Refused {
    pub code: String,
    pub message: String,
}

/// A connection that asks presence questions and reads their answers.
pub struct WsAsker {
    ws: Socket,
    next_ref: u64,
}

impl WsAsker {
    /// Connects as user `token`'s holder, without subscribing to anything:
    /// presence questions need only the right to subscribe.
    pub async fn connect(server: SocketAddr, index: usize, token: String) -> anyhow::Result<Self> {
        let spec = ConnSpec {
            kind: Kind::Realtime,
            server,
            index,
            token: Some(token),
            topic: None,
            recv_buffer: None,
        };
        let ws = tokio::time::timeout(HANDSHAKE, client::connect(&spec))
            .await
            .context("the asking connection's handshake timed out")??;
        Ok(WsAsker { ws, next_ref: 0 })
    }

    pub async fn stats(&mut self, topic: &str) -> anyhow::Result<(Stats, Duration)> {
        let (text, took) = self
            .ask(json!({"action": "presence_stats", "topic": topic}))
            .await?;
        Ok((parse(&text, "presence_stats")?, took))
    }

    pub async fn page(
        &mut self,
        topic: &str,
        limit: u64,
        cursor: Option<&str>,
    ) -> anyhow::Result<(Page, Duration)> {
        let mut command = json!({"action": "presence", "topic": topic, "limit": limit});
        if let Some(cursor) = cursor {
            command["cursor"] = json!(cursor);
        }
        let (text, took) = self.ask(command).await?;
        Ok((parse(&text, "presence")?, took))
    }

    /// Sends `command` with a fresh `ref` and waits for the frame carrying it;
    /// frames without it (join/leave, other answers) are skipped.
    async fn ask(&mut self, mut command: serde_json::Value) -> anyhow::Result<(String, Duration)> {
        self.next_ref += 1;
        let reference = self.next_ref.to_string();
        command["ref"] = json!(reference);
        let sent = Instant::now();
        self.ws.send(Message::text(command.to_string())).await?;
        let answer = tokio::time::timeout(HANDSHAKE, async {
            while let Some(msg) = self.ws.next().await {
                match msg? {
                    Message::Text(text) => {
                        let took = sent.elapsed();
                        if carries_ref(&text, &reference) {
                            return Ok((text.as_str().to_owned(), took));
                        }
                    }
                    Message::Close(frame) => bail!("closed while asking: {frame:?}"),
                    _ => {}
                }
            }
            bail!("the connection ended while asking")
        })
        .await
        .context("no answer in time")??;
        Ok(answer)
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Whether frame `text` answers the command sent with `reference`.
fn carries_ref(text: &str, reference: &str) -> bool {
    #[derive(Deserialize)]
    struct Ref {
        #[serde(rename = "ref")]
        reference: Option<String>,
    }
    serde_json::from_str::<Ref>(text).is_ok_and(|r| r.reference.as_deref() == Some(reference))
}

/// An answer of `kind`, or the error frame's code as [`Refused`].
fn parse<T: for<'de> Deserialize<'de>>(text: &str, kind: &str) -> anyhow::Result<T> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: String,
        code: Option<String>,
        message: Option<String>,
    }
    let head: Head = serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))?;
    match head.kind.as_str() {
        k if k == kind => {
            serde_json::from_str(text).with_context(|| format!("a malformed `{kind}`: {text}"))
        }
        "error" => Err(Refused {
            code: head.code.unwrap_or_default(),
            message: head.message.unwrap_or_default(),
        }
        .into()),
        other => bail!("expected `{kind}`, got `{other}`: {text}"),
    }
}

/// A keep-alive HTTP client to one node's presence API.
pub struct HttpAsker {
    client: Client<HttpConnector, Full<Bytes>>,
    node: SocketAddr,
}

impl HttpAsker {
    pub fn new(node: SocketAddr) -> HttpAsker {
        HttpAsker {
            client: Client::builder(TokioExecutor::new()).build_http(),
            node,
        }
    }

    pub async fn stats(&self, topic: &str) -> anyhow::Result<(Stats, Duration)> {
        let (body, took) = self
            .get(&format!("/api/topics/{topic}/presence/stats"))
            .await?;
        Ok((
            serde_json::from_slice(&body).context("the stats answer")?,
            took,
        ))
    }

    pub async fn page(
        &self,
        topic: &str,
        limit: u64,
        cursor: Option<&str>,
    ) -> anyhow::Result<(Page, Duration)> {
        let mut path = format!("/api/topics/{topic}/presence?limit={limit}");
        if let Some(cursor) = cursor {
            path += &format!("&cursor={}", percent_encode(cursor));
        }
        let (body, took) = self.get(&path).await?;
        Ok((
            serde_json::from_slice(&body).context("the presence page")?,
            took,
        ))
    }

    /// Open WebSocket connections, from the node's `realtime_connections` gauge.
    pub async fn open_connections(&self) -> anyhow::Result<u64> {
        let (body, _) = self.get("/metrics").await?;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| l.strip_prefix("realtime_connections "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .context("no realtime_connections gauge in /metrics")
    }

    /// The body of a 2xx answer and the time to its last byte; a JSON error
    /// body as [`Refused`].
    async fn get(&self, path: &str) -> anyhow::Result<(Bytes, Duration)> {
        let request = hyper::Request::get(format!("http://{}{path}", self.node))
            .header("authorization", format!("Bearer {API_KEY}"))
            .body(Full::new(Bytes::new()))?;
        let sent = Instant::now();
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let took = sent.elapsed();
        if !status.is_success() {
            #[derive(Deserialize)]
            struct Error {
                error: String,
            }
            return match serde_json::from_slice::<Error>(&body) {
                Ok(e) => Err(Refused {
                    code: e.error,
                    message: status.to_string(),
                }
                .into()),
                Err(_) => bail!("{status}: {}", String::from_utf8_lossy(&body)),
            };
        }
        Ok((body, took))
    }
}

/// Every byte outside the URL's unreserved set as `%XX`: the cursor is opaque.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_by_their_ref() {
        assert!(carries_ref(r#"{"type":"presence_stats","ref":"7"}"#, "7"));
        assert!(!carries_ref(r#"{"type":"presence_stats","ref":"17"}"#, "7"));
        assert!(!carries_ref(r#"{"type":"join","topic":"t"}"#, "7"));
    }

    #[test]
    fn an_error_frame_is_refused_with_its_code() {
        let err = parse::<Stats>(
            r#"{"type":"error","ref":"1","code":"no_presence","message":"no"}"#,
            "presence_stats",
        )
        .unwrap_err();
        assert_eq!(err.downcast_ref::<Refused>().unwrap().code, "no_presence");
        let stats: Stats = parse(
            r#"{"type":"presence_stats","topic":"t","ref":"2","connections":3,"users":2}"#,
            "presence_stats",
        )
        .unwrap();
        assert_eq!(
            (stats.connections, stats.users, stats.degraded),
            (3, 2, false)
        );
    }

    #[test]
    fn cursors_are_percent_encoded() {
        assert_eq!(percent_encode("a b/c=\0~"), "a%20b%2Fc%3D%00~");
    }
}
