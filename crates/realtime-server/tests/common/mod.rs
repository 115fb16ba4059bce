//! Shared harness for the server's integration tests: a real server listening on a
//! free port, a real WebSocket client (tokio-tungstenite) and a real HTTP client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime::Realtime;
use realtime_server::{Options, Server, Settings};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret";
pub const API_KEY: &str = "integration-test-api-key";
/// Upper bound for anything a test awaits; never a schedule.
pub const WAIT: Duration = Duration::from_secs(5);

/// Options for a production-mode server on a free port with the test secret.
pub fn options() -> Options {
    Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        jwt_secret: Some(SECRET.into()),
        api_key: Some(API_KEY.into()),
        ..Default::default()
    }
}

/// [`options`] with history on `chat` topics: `size` publications kept per topic
/// for 10 minutes, and any client may subscribe and publish there. Every other
/// topic keeps no history and follows the built-in rules.
pub fn history_options(size: u64) -> Options {
    use realtime_core::Access;
    use realtime_server::config::NamespaceOptions;
    Options {
        namespaces: Some(vec![
            NamespaceOptions::new("user:{sub}", Access::Owner, Access::Nobody),
            NamespaceOptions::new("role:{role}", Access::Owner, Access::Nobody),
            NamespaceOptions::new("chat", Access::Authenticated, Access::Authenticated)
                .with_history(size, Duration::from_secs(600)),
        ]),
        ..options()
    }
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub rt: Realtime,
    pub http: reqwest::Client,
    /// Open TCP connections (HTTP, WebSocket, SSE), as they change.
    pub open_connections: tokio::sync::watch::Receiver<usize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<bool>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(options()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        // Only the node label is generated here (its first 12 characters are used).
        let settings: Settings = options
            .resolve(|| "generated-0123456789".into())
            .expect("valid settings");
        let server = Server::bind(settings).await.expect("server binds");
        let addr = server.local_addr();
        let rt = server.realtime.clone();
        let open_connections = server.watch_open_connections();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            rt,
            http: reqwest::Client::new(),
            open_connections,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={}", self.addr, token)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects a client for `user` with `roles` and returns it after its welcome.
    pub async fn connect(&self, user: &str, roles: &[&str]) -> Client {
        let mut client = Client::connect(&self.ws_url(&token(user, roles))).await;
        let welcome = client.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame is the welcome: {welcome}"
        );
        client.id = welcome["connection_id"].as_str().unwrap().to_owned();
        client
    }

    /// `POST path` with the API key and a JSON body; returns (status, body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        answer(
            self.http
                .post(self.url(path))
                .bearer_auth(API_KEY)
                .json(&body),
        )
        .await
    }

    /// `POST path` with the API key and raw body bytes labelled as JSON.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let request = self.http.post(self.url(path)).bearer_auth(API_KEY);
        answer(
            request
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.http.get(self.url(path)).bearer_auth(API_KEY)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.http.delete(self.url(path)).bearer_auth(API_KEY)).await
    }

    /// `method path` with an optional `Authorization` header value and no body;
    /// returns (status, body as JSON or `Null`).
    pub async fn request_with_auth(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        answer(request).await
    }

    /// The `/metrics` exposition text (no API key needed).
    pub async fn metrics_text(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET /metrics");
        r.text().await.unwrap()
    }

    /// A handshake on `/ws` with an optional `token` query parameter and an optional
    /// `Authorization` header value.
    pub async fn handshake(
        &self,
        query_token: Option<&str>,
        authorization: Option<&str>,
    ) -> Handshake {
        let url = match query_token {
            Some(t) => self.ws_url(t),
            None => format!("ws://{}/ws", self.addr),
        };
        Client::try_connect(&url, authorization).await
    }

    /// Triggers graceful shutdown and waits for it; returns whether it was clean.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    /// Waits (bounded by [`WAIT`]) until the registry holds exactly `n` connections.
    /// Sessions unregister after their socket closes, so tests await this rather
    /// than assume it.
    pub async fn wait_for_connections(&self, n: usize) {
        let mut count = self.rt.watch_connection_count();
        tokio::time::timeout(WAIT, count.wait_for(|c| *c == n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "expected {n} connections, have {}",
                    self.rt.connection_count()
                )
            })
            .expect("engine alive");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Claims valid for an hour.
pub fn claims(user: &str, roles: &[&str]) -> Value {
    let now = now();
    json!({"sub": user, "roles": roles, "iat": now, "exp": now + 3600})
}

pub fn now() -> i64 {
    realtime::unix_seconds(SystemTime::now())
}

pub fn token(user: &str, roles: &[&str]) -> String {
    sign_hs256(&claims(user, roles), SECRET)
}

pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn sign_rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rsa-private.pem")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

pub fn sign_es256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("ec-private.pem")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// Unpadded base64url, for hand-built tokens.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A real WebSocket client.
pub struct Client {
    pub id: String,
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a handshake attempt produced.
pub enum Handshake {
    Accepted(Box<Client>),
    /// HTTP status and JSON body of a refused upgrade.
    Refused(u16, Value),
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        match Self::try_connect(url, None).await {
            Handshake::Accepted(c) => *c,
            Handshake::Refused(status, body) => panic!("handshake refused: {status} {body}"),
        }
    }

    /// Attempts a handshake, optionally with an `Authorization` header.
    pub async fn try_connect(url: &str, authorization: Option<&str>) -> Handshake {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        Self::try_connect_with(url, &headers).await
    }

    /// Attempts a handshake with extra request headers (e.g. `origin`).
    pub async fn try_connect_with(url: &str, headers: &[(&str, &str)]) -> Handshake {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")
        {
            Ok((ws, _)) => Handshake::Accepted(Box::new(Client {
                id: String::new(),
                ws,
            })),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null));
                Handshake::Refused(status, body.unwrap_or(Value::Null))
            }
            Err(e) => panic!("handshake failed: {e}"),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next JSON text frame (pings are answered by tungstenite underneath).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait bound")
                .expect("stream open")
                .expect("frame read");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON text frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads frames until a close frame arrives; returns it and the text frames seen.
    pub async fn recv_close(&mut self) -> (Option<CloseFrame>, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait bound");
            match next {
                Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    // Keep polling so tungstenite sends the answering close and the
                    // server can finish its close handshake without waiting.
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return (frame, seen);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before close frame: {e}"),
                None => return (None, seen),
            }
        }
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// Expects the server to close the socket with `code`, with no text frame first.
    pub async fn expect_close(&mut self, code: u16) {
        let (frame, seen) = self.recv_close().await;
        assert_eq!(seen, Vec::<Value>::new(), "no text frames before the close");
        let frame = frame.expect("a close frame with a code");
        assert_eq!(
            u16::from(frame.code),
            code,
            "close code (reason {:?})",
            frame.reason
        );
    }

    /// Sends a command and returns the reply.
    pub async fn command(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        self.recv().await
    }

    /// Subscribes to `topic` (with the topic as `ref`) and asserts the plain
    /// `subscribed` acknowledgement comes next.
    pub async fn subscribe_acked(&mut self, topic: &str) {
        let reply = self
            .command(json!({"action": "subscribe", "topic": topic, "ref": topic}))
            .await;
        assert_eq!(
            reply,
            json!({"type": "subscribed", "topic": topic, "ref": topic})
        );
    }

    /// Asserts nothing arrives: sends a ping and expects its pong to be next.
    pub async fn assert_nothing_pending(&mut self) {
        let reply = self
            .command(json!({"action": "ping", "ref": "probe"}))
            .await;
        assert_eq!(
            reply,
            json!({"type": "pong", "ref": "probe"}),
            "unexpected frame before pong"
        );
    }
}

/// Sends `request`; returns its status and its body as JSON (`Null` if not JSON).
pub async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
