//! The backend proxy hooks end to end: the real binary calls a real HTTP
//! backend started by the test (tests/proxy_backend), which checks every
//! signature with its own HMAC. Connect by cookie or alongside a JWT, refusals
//! that reach the client as 401/403, a backend that is down, slow, busy or
//! answers garbage (always refused, never allowed), subscribe and publish
//! decisions only for the namespaces that name them, and the metrics.

mod binary;
mod common;
mod processes;
mod proxy_backend;
#[path = "../../realtime/tests/support/sse.rs"]
mod sse;
mod webhook_receiver;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use binary::{Running, start};
use common::{API_KEY, Client, Handshake, SECRET, WAIT, token};
use proxy_backend::{Backend, Reply};

const PROXY_SECRET: &str = "proxy-test-secret-0123456789";

/// Namespaces for the subscribe and publish tests: `room` topics ask both
/// proxies, `open` topics ask neither.
const ROOMS: &str = r#"
[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "nobody"

[[namespaces]]
pattern = "room"
subscribe = "authenticated"
publish = "authenticated"
subscribe_proxy = true
publish_proxy = true

[[namespaces]]
pattern = "open"
subscribe = "authenticated"
publish = "authenticated"
"#;

/// Starts the binary with the test keys, the proxy secret, `env` and, when
/// given, `toml` as its config file.
async fn server(env: &[(&str, String)], toml: Option<&str>) -> Running {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let mut all: Vec<(&str, String)> = vec![
        ("REALTIME_LISTEN", "127.0.0.1:0".into()),
        ("REALTIME_JWT_SECRET", SECRET.into()),
        ("REALTIME_API_KEY", API_KEY.into()),
        ("REALTIME_PROXY_SECRET", PROXY_SECRET.into()),
        ("REALTIME_LOG", "info".into()),
    ];
    all.extend(env.iter().cloned());
    let mut args = Vec::new();
    if let Some(toml) = toml {
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rt-proxy-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap();
        args.push(format!("--config={}", path.display()));
    }
    let env: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(&env, &args).await.listening()
}

fn ws_url(server: &Running, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("ws://{}/ws?token={t}", server.local()),
        None => format!("ws://{}/ws", server.local()),
    }
}

/// A handshake that must be accepted: the client after its welcome, and the welcome.
async fn accepted(url: &str, headers: &[(&str, &str)]) -> (Client, Value) {
    match Client::try_connect_with(url, headers).await {
        Handshake::Accepted(client) => {
            let mut client = *client;
            let welcome = client.recv().await;
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            client.id = welcome["connection_id"].as_str().unwrap().to_owned();
            (client, welcome)
        }
        Handshake::Refused(status, body) => panic!("handshake refused: {status} {body}"),
    }
}

/// A handshake that must be refused: its status and JSON body.
async fn refused(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match Client::try_connect_with(url, headers).await {
        Handshake::Refused(status, body) => (status, body),
        Handshake::Accepted(_) => panic!("handshake accepted, expected a refusal"),
    }
}

async fn get_json(server: &Running, path: &str) -> (u16, Value) {
    common::answer(
        reqwest::Client::new()
            .get(server.url(path))
            .bearer_auth(API_KEY),
    )
    .await
}

async fn metrics(server: &Running) -> String {
    let r = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

/// The value of one exposition line, e.g. `name{labels}`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn requests(text: &str, hook: &str, outcome: &str) -> f64 {
    metric(
        text,
        &format!("realtime_proxy_requests_total{{hook=\"{hook}\",outcome=\"{outcome}\"}}"),
    )
}

fn timed(text: &str, hook: &str) -> f64 {
    metric(
        text,
        &format!("realtime_proxy_request_seconds_count{{hook=\"{hook}\"}}"),
    )
}

/// The connect proxy of these tests: the session cookie `sid=s-<user>` names
/// the user, who gets role `editor` and metadata naming the tenant header.
fn sessions(body: &Value) -> Reply {
    match body["cookies"]["sid"]
        .as_str()
        .and_then(|s| s.strip_prefix("s-"))
    {
        Some(user) => Reply::json(json!({"result": {
            "user": user,
            "roles": ["editor"],
            "metadata": {"tenant": body["headers"]["x-tenant"]},
        }})),
        None => Reply::json(json!({"error": {
            "status": 401, "reason": "no_session", "message": "log in first"
        }})),
    }
}

fn connect_env(backend_url: String, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![("REALTIME_CONNECT_PROXY_URL", backend_url)];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

#[tokio::test]
async fn a_cookie_session_connects_without_a_token_and_only_allowed_headers_are_forwarded() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", sessions);
    let server = server(
        &connect_env(
            backend.url("/connect"),
            &[("REALTIME_CONNECT_PROXY_HEADERS", "X-Tenant,user-agent")],
        ),
        None,
    )
    .await;
    let (_client, welcome) = accepted(
        &ws_url(&server, None),
        &[
            ("cookie", "sid=s-alice; theme=dark"),
            ("x-tenant", "acme"),
            ("x-internal", "not-for-the-backend"),
        ],
    )
    .await;
    assert_eq!(welcome["user_id"], "alice");
    assert_eq!(welcome["roles"], json!(["editor"]));
    let id = welcome["connection_id"].as_str().unwrap();
    let (status, summary) = get_json(&server, &format!("/api/connections/{id}")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["metadata"], json!({"tenant": "acme"}));

    let seen = backend.seen_at("/connect");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let body = &seen[0].body;
    assert_eq!(body["transport"], "websocket");
    assert_eq!(
        (&body["user"], &body["roles"], &body["metadata"]),
        (&Value::Null, &Value::Null, &Value::Null),
        "no token: no identity"
    );
    assert_eq!(body["cookies"], json!({"sid": "s-alice", "theme": "dark"}));
    // Only the allow-listed headers that the handshake had (tungstenite sends no
    // user-agent), never the others.
    assert_eq!(body["headers"], json!({"x-tenant": "acme"}));
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert!(seen[0].headers["user-agent"].starts_with("boundary-realtime/"));
    backend.assert_all_signed();
}

#[tokio::test]
async fn with_a_token_the_proxy_sees_its_user_and_a_bad_token_never_reaches_it() {
    let backend = Backend::start(PROXY_SECRET).await;
    // The backend maps the token's user to its own account name.
    backend.on("/connect", |body: &Value| {
        Reply::json(json!({"result": {
            "user": format!("acct-{}", body["user"].as_str().unwrap_or("none")),
            "roles": body["roles"],
        }}))
    });
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    let (_client, welcome) =
        accepted(&ws_url(&server, Some(&token("bob", &["viewer"]))), &[]).await;
    assert_eq!(welcome["user_id"], "acct-bob");
    assert_eq!(welcome["roles"], json!(["viewer"]));
    assert!(
        welcome["expires_at"].is_i64(),
        "the token's expiry still ends the connection: {welcome}"
    );
    let seen = backend.seen_at("/connect");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["user"], "bob");
    assert_eq!(seen[0].body["roles"], json!(["viewer"]));
    assert_eq!(seen[0].body["cookies"], json!({}));

    let (status, body) = refused(&ws_url(&server, Some("not.a.token")), &[]).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("unauthorized")),
        "{body}"
    );
    assert_eq!(
        backend.seen_at("/connect").len(),
        1,
        "a token that does not verify is refused before the backend is asked"
    );
    backend.assert_all_signed();
}

#[tokio::test]
async fn backend_refusals_reach_the_client_as_401_and_403_with_the_reason() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", |body: &Value| {
        if body["cookies"]["sid"] == "s-banned" {
            return Reply::json(json!({"error": {
                "status": 403, "reason": "banned", "message": "this account is suspended"
            }}));
        }
        sessions(body)
    });
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    let url = ws_url(&server, None);
    assert_eq!(
        refused(&url, &[]).await,
        (
            401,
            json!({"error": "unauthorized", "reason": "no_session", "message": "log in first"})
        )
    );
    assert_eq!(
        refused(&url, &[("cookie", "sid=s-banned")]).await,
        (
            403,
            json!({"error": "forbidden", "reason": "banned", "message": "this account is suspended"})
        )
    );
    let (status, _) = get_json(&server, "/api/connections").await;
    assert_eq!(status, 200);
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "connect", "refused"), 2.0);
    assert_eq!(requests(&text, "connect", "allowed"), 0.0);
    assert_eq!(backend.seen_at("/connect").len(), 2);
    backend.assert_all_signed();
}

#[tokio::test]
async fn a_backend_that_is_down_refuses_handshakes_with_503() {
    let closed = processes::free_port();
    let mut server = server(
        &connect_env(format!("http://127.0.0.1:{closed}/connect"), &[]),
        None,
    )
    .await;
    for token in [None, Some(token("carol", &[]))] {
        let (status, body) = refused(
            &ws_url(&server, token.as_deref()),
            &[("cookie", "sid=s-carol")],
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "proxy_unavailable");
        assert_eq!(body["reason"], "proxy_unavailable");
        assert_eq!(body["message"], "the connect proxy is unreachable");
    }
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "connect", "unavailable"), 2.0);
    assert_eq!(requests(&text, "connect", "allowed"), 0.0);
    assert_eq!(timed(&text, "connect"), 2.0);
    // The operator's log has what the client is not told: where and why.
    server
        .wait_for_log(&[
            "WARN",
            "proxy unavailable; refusing until it answers",
            "hook=\"connect\"",
            &format!("127.0.0.1:{closed}"),
        ])
        .await;
}

#[tokio::test]
async fn a_slow_backend_is_refused_after_the_timeout_and_the_server_stays_responsive() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", |body: &Value| sessions(body).held());
    let server = server(
        &connect_env(
            backend.url("/connect"),
            &[("REALTIME_PROXY_TIMEOUT", "500ms")],
        ),
        None,
    )
    .await;
    let url = ws_url(&server, None);
    let pending = tokio::spawn({
        let url = url.clone();
        async move { refused(&url, &[("cookie", "sid=s-dave")]).await }
    });
    backend.wait_for("/connect", 1, WAIT).await;
    // While the handshake waits on the backend, everything else is served.
    let (status, health) = get_json(&server, "/health").await;
    assert_eq!((status, &health["status"]), (200, &json!("healthy")));
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "proxy_unavailable");
    assert_eq!(
        body["message"],
        "the connect proxy did not answer within the timeout"
    );
    // The backend answers at last; the answer is too late to admit anyone.
    backend.release();
    let (status, list) = get_json(&server, "/api/connections").await;
    assert_eq!((status, &list["count"]), (200, &json!(0)), "{list}");
    // Once it answers in time again, handshakes are admitted.
    backend.on("/connect", sessions);
    let (_client, welcome) = accepted(&url, &[("cookie", "sid=s-dave")]).await;
    assert_eq!(welcome["user_id"], "dave");
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "connect", "unavailable"), 1.0);
    assert_eq!(requests(&text, "connect", "allowed"), 1.0);
    backend.assert_all_signed();
}

#[tokio::test]
async fn garbage_answers_refuse_with_503() {
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "html",
            Reply::raw(200, "text/html", "<html><body>Login</body></html>"),
            "not JSON",
        ),
        ("empty", Reply::raw(200, "application/json", ""), "not JSON"),
        (
            "no-user",
            Reply::json(json!({"result": {"roles": []}})),
            "wrong shape",
        ),
        (
            "blank-user",
            Reply::json(json!({"result": {"user": ""}})),
            "wrong shape",
        ),
        (
            "both",
            Reply::json(json!({"result": {"user": "u"}, "error": {"status": 403, "reason": "x"}})),
            "wrong shape",
        ),
        ("neither", Reply::json(json!({"ok": true})), "wrong shape"),
        ("array", Reply::json(json!(["u"])), "wrong shape"),
        (
            "bad-topic",
            Reply::json(json!({"result": {"user": "u", "topics": ["no spaces"]}})),
            "wrong shape",
        ),
        (
            "bad-status",
            Reply::json(json!({"error": {"status": 500, "reason": "oops"}})),
            "wrong shape",
        ),
        (
            "bad-reason",
            Reply::json(json!({"error": {"status": 403, "reason": "Not Allowed"}})),
            "wrong shape",
        ),
        (
            "server-error",
            Reply::status(500, json!({"result": {"user": "u"}})),
            "answered HTTP 500",
        ),
        (
            "redirect",
            Reply::raw(302, "text/plain", ""),
            "answered HTTP 302",
        ),
    ];
    let backend = Backend::start(PROXY_SECRET).await;
    let replies: std::collections::HashMap<String, Reply> = cases
        .iter()
        .map(|(name, reply, _)| (name.to_string(), reply.clone()))
        .collect();
    backend.on("/connect", move |body: &Value| {
        replies[body["cookies"]["case"].as_str().unwrap()].clone()
    });
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    let url = ws_url(&server, None);
    for (name, _, says) in &cases {
        let cookie = format!("case={name}");
        let (status, body) = refused(&url, &[("cookie", &cookie)]).await;
        assert_eq!(status, 503, "{name}: {body}");
        assert_eq!(body["error"], "proxy_unavailable", "{name}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{name}: {message}");
    }
    assert_eq!(backend.seen_at("/connect").len(), cases.len());
    let (_, list) = get_json(&server, "/api/connections").await;
    assert_eq!(list["count"], 0, "garbage admits no one");
    let text = metrics(&server).await;
    assert_eq!(
        requests(&text, "connect", "unavailable"),
        cases.len() as f64
    );
    assert_eq!(requests(&text, "connect", "allowed"), 0.0);
    backend.assert_all_signed();
}

#[tokio::test]
async fn the_concurrency_bound_refuses_the_extra_handshake_without_calling_the_backend() {
    const BOUND: usize = 2;
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", |body: &Value| sessions(body).held());
    let bound = BOUND.to_string();
    let server = server(
        &connect_env(
            backend.url("/connect"),
            &[
                ("REALTIME_PROXY_MAX_CONCURRENCY", &bound),
                ("REALTIME_PROXY_TIMEOUT", "1s"),
            ],
        ),
        None,
    )
    .await;
    let url = ws_url(&server, None);
    let handshakes: Vec<_> = (0..=BOUND)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let cookie = format!("sid=s-user{i}");
                refused(&url, &[("cookie", &cookie)]).await
            })
        })
        .collect();
    let mut messages = Vec::new();
    for handshake in handshakes {
        let (status, body) = handshake.await.unwrap();
        assert_eq!(
            (status, &body["error"]),
            (503, &json!("proxy_unavailable")),
            "{body}"
        );
        messages.push(body["message"].as_str().unwrap().to_owned());
    }
    messages.sort();
    assert_eq!(
        messages,
        [
            "the connect proxy did not answer within the timeout",
            "the connect proxy did not answer within the timeout",
            "the connect proxy is busy: no free slot within the timeout",
        ],
        "{BOUND} calls wait on the backend, the extra one waits for a slot"
    );
    assert_eq!(
        backend.seen_at("/connect").len(),
        BOUND,
        "the extra handshake never reached the backend"
    );
    // The backend finishes the calls it holds; their slots free and the next
    // handshake is admitted.
    backend.release();
    backend.on("/connect", sessions);
    let (_client, welcome) = accepted(&url, &[("cookie", "sid=s-erin")]).await;
    assert_eq!(welcome["user_id"], "erin");
    let text = metrics(&server).await;
    assert_eq!(
        requests(&text, "connect", "unavailable"),
        (BOUND + 1) as f64
    );
    assert_eq!(requests(&text, "connect", "allowed"), 1.0);
    backend.assert_all_signed();
}

/// A server whose `room` namespace asks `backend`'s subscribe and publish proxies.
async fn rooms(backend: &Backend) -> Running {
    server(
        &[
            ("REALTIME_SUBSCRIBE_PROXY_URL", backend.url("/subscribe")),
            ("REALTIME_PUBLISH_PROXY_URL", backend.url("/publish")),
        ],
        Some(ROOMS),
    )
    .await
}

async fn subscribe(client: &mut Client, topic: &str) -> Value {
    client
        .command(json!({"action": "subscribe", "topic": topic, "ref": topic}))
        .await
}

async fn publish(client: &mut Client, topic: &str, text: &str) -> Value {
    client
        .command(json!({
            "action": "publish", "topic": topic, "ref": text,
            "message": {"type": "chat", "text": text},
        }))
        .await
}

#[tokio::test]
async fn the_subscribe_proxy_decides_only_for_namespaces_that_name_it() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/subscribe", |body: &Value| {
        if body["topic"] == "room:secret" {
            Reply::json(
                json!({"error": {"reason": "not_a_member", "message": "join the room first"}}),
            )
        } else {
            Reply::json(json!({"result": {}}))
        }
    });
    let server = rooms(&backend).await;
    let (mut alice, _) = accepted(&ws_url(&server, Some(&token("alice", &["staff"]))), &[]).await;

    assert_eq!(
        subscribe(&mut alice, "room:lobby").await,
        json!({"type": "subscribed", "topic": "room:lobby", "ref": "room:lobby"})
    );
    assert_eq!(
        subscribe(&mut alice, "room:secret").await,
        json!({"type": "error", "code": "forbidden", "message": "join the room first", "ref": "room:secret"})
    );
    // Topics of other namespaces, and of none, never reach the backend.
    for topic in ["open:chat", "news", "user:alice"] {
        assert_eq!(
            subscribe(&mut alice, topic).await["type"],
            "subscribed",
            "{topic}"
        );
    }
    // The topic policy decides first: a refused topic never reaches it either.
    assert_eq!(subscribe(&mut alice, "user:bob").await["code"], "forbidden");

    let seen = backend.seen_at("/subscribe");
    let topics: Vec<&Value> = seen.iter().map(|s| &s.body["topic"]).collect();
    assert_eq!(topics, [&json!("room:lobby"), &json!("room:secret")]);
    assert_eq!(
        seen[0].body,
        json!({
            "user": "alice", "roles": ["staff"], "connection_id": alice.id,
            "topic": "room:lobby", "metadata": {},
        })
    );
    assert!(backend.seen_at("/publish").is_empty());

    // An SSE stream's topics are asked about alike, before the stream starts.
    let alice_token = token("alice", &["staff"]);
    let refused_topic = format!("/sse?token={alice_token}&topic=open:chat&topic=room:secret");
    assert_eq!(
        sse::open(server.local(), &refused_topic, &[])
            .await
            .refused(),
        (
            403,
            json!({"error": "forbidden", "reason": "not_a_member", "topic": "room:secret",
                   "message": "join the room first"})
        )
    );
    let allowed = format!("/sse?token={alice_token}&topic=room:lobby");
    let mut stream = sse::open(server.local(), &allowed, &[]).await.stream();
    assert_eq!(stream.next_json().await["type"], "welcome");
    assert_eq!(
        stream.next_json().await,
        json!({"type": "subscribed", "topic": "room:lobby"})
    );
    let topics: Vec<Value> = backend
        .seen_at("/subscribe")
        .iter()
        .map(|s| s.body["topic"].clone())
        .collect();
    assert_eq!(
        topics,
        [
            json!("room:lobby"),
            json!("room:secret"),
            json!("room:secret"),
            json!("room:lobby")
        ]
    );

    let text = metrics(&server).await;
    assert_eq!(requests(&text, "subscribe", "allowed"), 2.0);
    assert_eq!(requests(&text, "subscribe", "refused"), 2.0);
    assert_eq!(requests(&text, "subscribe", "unavailable"), 0.0);
    assert_eq!(timed(&text, "subscribe"), 4.0);
    // Every label set exists from the start, hooks not configured included.
    assert_eq!(requests(&text, "connect", "allowed"), 0.0);
    assert_eq!(timed(&text, "connect"), 0.0);
    backend.assert_all_signed();
}

#[tokio::test]
async fn the_publish_proxy_allows_denies_and_replaces() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/subscribe", |_: &Value| Reply::json(json!({"result": {}})));
    backend.on("/publish", |body: &Value| {
        match body["message"]["text"].as_str() {
            Some("spam") => {
                Reply::json(json!({"error": {"reason": "spam", "message": "no advertising"}}))
            }
            Some("darn") => {
                Reply::json(json!({"result": {"message": {"type": "chat", "text": "d***"}}}))
            }
            _ => Reply::json(json!({"result": {}})),
        }
    });
    let server = rooms(&backend).await;
    let (mut alice, _) = accepted(&ws_url(&server, Some(&token("alice", &[]))), &[]).await;
    let (mut bob, _) = accepted(&ws_url(&server, Some(&token("bob", &[]))), &[]).await;
    assert_eq!(
        subscribe(&mut bob, "room:lobby").await["type"],
        "subscribed"
    );

    let reply = publish(&mut alice, "room:lobby", "hello").await;
    assert_eq!(
        (&reply["type"], &reply["delivered"]),
        (&json!("published"), &json!(1)),
        "{reply}"
    );
    let reply = publish(&mut alice, "room:lobby", "spam").await;
    assert_eq!(
        reply,
        json!({"type": "error", "code": "forbidden", "message": "no advertising", "ref": "spam"})
    );
    let reply = publish(&mut alice, "room:lobby", "darn").await;
    assert_eq!(reply["type"], "published", "{reply}");

    // Bob gets what was allowed, the replacement instead of the original, and
    // nothing of the refused one.
    let first = bob.recv().await;
    assert_eq!(
        (&first["topic"], &first["text"]),
        (&json!("room:lobby"), &json!("hello"))
    );
    let second = bob.recv().await;
    assert_eq!(
        (&second["topic"], &second["text"]),
        (&json!("room:lobby"), &json!("d***"))
    );
    bob.assert_nothing_pending().await;

    // A namespace without the proxy publishes without asking.
    assert_eq!(subscribe(&mut bob, "open:chat").await["type"], "subscribed");
    assert_eq!(
        publish(&mut alice, "open:chat", "spam").await["delivered"],
        1
    );
    assert_eq!(bob.recv().await["text"], "spam");

    let seen = backend.seen_at("/publish");
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(
        seen[0].body,
        json!({
            "user": "alice", "roles": [], "connection_id": alice.id,
            "topic": "room:lobby", "message": {"type": "chat", "text": "hello"},
        })
    );
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "publish", "allowed"), 2.0);
    assert_eq!(requests(&text, "publish", "refused"), 1.0);
    backend.assert_all_signed();
}

#[tokio::test]
async fn subscribe_and_publish_proxies_that_are_down_refuse_with_proxy_unavailable() {
    let closed = processes::free_port();
    let server = server(
        &[
            (
                "REALTIME_SUBSCRIBE_PROXY_URL",
                format!("http://127.0.0.1:{closed}/s"),
            ),
            (
                "REALTIME_PUBLISH_PROXY_URL",
                format!("http://127.0.0.1:{closed}/p"),
            ),
        ],
        Some(ROOMS),
    )
    .await;
    let (mut alice, _) = accepted(&ws_url(&server, Some(&token("alice", &[]))), &[]).await;
    assert_eq!(
        subscribe(&mut alice, "room:lobby").await,
        json!({"type": "error", "code": "proxy_unavailable",
               "message": "the subscribe proxy is unreachable", "ref": "room:lobby"})
    );
    let target = format!("/sse?token={}&topic=room:lobby", token("alice", &[]));
    assert_eq!(
        sse::open(server.local(), &target, &[]).await.refused(),
        (
            503,
            json!({"error": "proxy_unavailable", "reason": "proxy_unavailable",
                   "topic": "room:lobby", "message": "the subscribe proxy is unreachable"})
        )
    );
    assert_eq!(
        publish(&mut alice, "room:lobby", "hi").await,
        json!({"type": "error", "code": "proxy_unavailable",
               "message": "the publish proxy is unreachable", "ref": "hi"})
    );
    // The connection stays, and topics that ask no proxy still work.
    assert_eq!(
        publish(&mut alice, "open:chat", "hi").await["type"],
        "published"
    );
    assert_eq!(
        subscribe(&mut alice, "open:chat").await["type"],
        "subscribed"
    );
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "subscribe", "unavailable"), 2.0);
    assert_eq!(requests(&text, "publish", "unavailable"), 1.0);
    assert_eq!(requests(&text, "publish", "allowed"), 0.0);
}

#[tokio::test]
async fn a_request_signed_with_another_key_is_refused_by_the_backend() {
    // The backend checks signatures with its own key, which is not the server's:
    // it refuses every request, and the server refuses the handshake.
    let backend = Backend::start("a-different-key-0123456789").await;
    backend.on("/connect", sessions);
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    let (status, body) = refused(&ws_url(&server, None), &[("cookie", "sid=s-frank")]).await;
    assert_eq!(
        (status, &body["message"]),
        (503, &json!("the connect proxy answered HTTP 401"))
    );
    let seen = backend.seen_at("/connect");
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].signed,
        "the backend's own check must fail with another key"
    );
}

#[tokio::test]
async fn a_namespace_naming_a_proxy_without_its_url_is_a_config_error() {
    let toml = "[[namespaces]]\npattern = \"room\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nsubscribe_proxy = true\n";
    let path = std::env::temp_dir().join(format!("rt-proxy-missing-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let config = format!("--config={}", path.display());
    let (code, stderr) = start(
        &[
            ("REALTIME_JWT_SECRET", SECRET),
            ("REALTIME_API_KEY", API_KEY),
        ],
        &[&config],
    )
    .await
    .refused();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "namespace \"room\": subscribe_proxy = true needs REALTIME_SUBSCRIBE_PROXY_URL"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_connect_proxys_topics_are_subscribed_server_side() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", |_: &Value| {
        Reply::json(json!({"result": {"user": "gina", "topics": ["news", "user:gina:feed"]}}))
    });
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    let (mut gina, _) = accepted(&ws_url(&server, None), &[]).await;
    let path = format!("/api/connections/{}", gina.id);
    processes::eventually_eq(
        WAIT,
        "the admission's topics",
        json!(["news", "user:gina:feed"]),
        || async {
            let (_, summary) = get_json(&server, &path).await;
            let mut topics: Vec<Value> = summary["topics"].as_array().cloned().unwrap_or_default();
            topics.sort_by_key(|t| t.to_string());
            Value::Array(topics)
        },
    )
    .await;
    let (status, sent) = common::answer(
        reqwest::Client::new()
            .post(server.url("/api/topics/news/messages"))
            .bearer_auth(API_KEY)
            .json(&json!({"type": "headline", "text": "proxies landed"})),
    )
    .await;
    assert_eq!((status, &sent["delivered"]), (200, &json!(1)), "{sent}");
    let frame = gina.recv().await;
    assert_eq!(
        (&frame["topic"], &frame["text"]),
        (&json!("news"), &json!("proxies landed"))
    );
}

#[tokio::test]
async fn an_sse_stream_is_admitted_by_the_connect_proxy_like_a_websocket() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", |body: &Value| {
        if body["cookies"]["sid"] == "s-hana" {
            Reply::json(json!({"result": {"user": "hana", "roles": ["reader"], "topics": ["news"]}}))
        } else {
            Reply::json(json!({"error": {"status": 401, "reason": "no_session", "message": "log in first"}}))
        }
    });
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    assert_eq!(
        sse::open(server.local(), "/sse?topic=open:x", &[])
            .await
            .refused(),
        (
            401,
            json!({"error": "unauthorized", "reason": "no_session", "message": "log in first"})
        )
    );
    let mut stream = sse::open(
        server.local(),
        "/sse?topic=open:x",
        &[("cookie", "sid=s-hana")],
    )
    .await
    .stream();
    let welcome = stream.next_json().await;
    assert_eq!(
        (&welcome["type"], &welcome["user_id"], &welcome["roles"]),
        (&json!("welcome"), &json!("hana"), &json!(["reader"])),
        "{welcome}"
    );
    let seen = backend.seen_at("/connect");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body["transport"], "sse");
    assert_eq!(seen[1].body["cookies"], json!({"sid": "s-hana"}));
    // The backend's topic is subscribed as the stream opens: a message to it
    // arrives, after the `subscribed` events.
    let id = welcome["connection_id"].as_str().unwrap().to_owned();
    processes::eventually(WAIT, "the admission's topic subscribed", || async {
        let (_, summary) = get_json(&server, &format!("/api/connections/{id}")).await;
        summary["topics"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("news")))
    })
    .await;
    let (status, sent) = common::answer(
        reqwest::Client::new()
            .post(server.url("/api/topics/news/messages"))
            .bearer_auth(API_KEY)
            .json(&json!({"type": "headline", "text": "over SSE"})),
    )
    .await;
    assert_eq!((status, &sent["delivered"]), (200, &json!(1)), "{sent}");
    loop {
        let frame = stream.next_json().await;
        if frame["type"] == "subscribed" {
            continue;
        }
        assert_eq!(
            (&frame["topic"], &frame["text"]),
            (&json!("news"), &json!("over SSE")),
            "{frame}"
        );
        break;
    }
    backend.assert_all_signed();
}

#[tokio::test]
async fn a_cookie_or_header_with_utf8_bytes_is_forwarded_and_spoils_no_other_cookie() {
    // Browsers send cookie values as raw UTF-8 bytes; one such cookie, set by any
    // page of the site, must not hide the session cookie next to it.
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", sessions);
    let server = server(
        &connect_env(
            backend.url("/connect"),
            &[("REALTIME_CONNECT_PROXY_HEADERS", "x-tenant")],
        ),
        None,
    )
    .await;
    let (_client, welcome) = accepted(
        &ws_url(&server, None),
        &[
            ("cookie", "city=Zürich; sid=s-ines"),
            ("x-tenant", "Müller AG"),
        ],
    )
    .await;
    assert_eq!(welcome["user_id"], "ines");
    let seen = backend.seen_at("/connect");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(
        seen[0].body["cookies"],
        json!({"city": "Zürich", "sid": "s-ines"})
    );
    assert_eq!(seen[0].body["headers"], json!({"x-tenant": "Müller AG"}));
    backend.assert_all_signed();
}

#[tokio::test]
async fn an_expires_at_already_past_refuses_the_handshake_as_an_expired_token_is() {
    // Admitting it would open the connection only to close it with 3005 at once,
    // and clients reconnect after 3005 without waiting: a tight loop.
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/connect", |_: &Value| {
        Reply::json(
            json!({"result": {"user": "ivan", "topics": ["news"], "expires_at": 1_000_000_000}}),
        )
    });
    let server = server(&connect_env(backend.url("/connect"), &[]), None).await;
    let (status, body) = refused(&ws_url(&server, None), &[]).await;
    assert_eq!(
        (status, &body["error"], &body["reason"]),
        (401, &json!("unauthorized"), &json!("expired")),
        "{body}"
    );
    let (status, body) = sse::open(server.local(), "/sse", &[]).await.refused();
    assert_eq!(
        (status, &body["reason"]),
        (401, &json!("expired")),
        "{body}"
    );
    let (_, list) = get_json(&server, "/api/connections").await;
    assert_eq!(list["count"], 0, "{list}");
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "connect", "refused"), 2.0);
    assert_eq!(requests(&text, "connect", "allowed"), 0.0);
    assert_eq!(backend.seen_at("/connect").len(), 2);
}

#[tokio::test]
async fn a_replacement_without_a_string_type_is_the_proxys_fault_not_the_clients() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/publish", |_: &Value| {
        Reply::json(json!({"result": {"message": {"text": "no type"}}}))
    });
    let server = rooms(&backend).await;
    let (mut alice, _) = accepted(&ws_url(&server, Some(&token("alice", &[]))), &[]).await;
    let reply = publish(&mut alice, "room:lobby", "hello").await;
    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&json!("error"), &json!("proxy_unavailable")),
        "{reply}"
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("the publish proxy's answer has the wrong shape"),
        "{reply}"
    );
    let text = metrics(&server).await;
    assert_eq!(requests(&text, "publish", "allowed"), 0.0);
    assert_eq!(requests(&text, "publish", "unavailable"), 1.0);
    backend.assert_all_signed();
}

#[tokio::test]
async fn an_sse_requests_proxied_topics_are_asked_about_together_and_the_first_refused_is_named() {
    let backend = Backend::start(PROXY_SECRET).await;
    // Every answer is held until the test has seen all three questions arrive:
    // asked one after the other, the first would wait for a release that never
    // comes, and the backend would never see the other two.
    backend.on("/subscribe", |body: &Value| {
        if body["topic"] == "room:b" {
            Reply::json(json!({"error": {"reason": "not_a_member", "message": "not in b"}})).held()
        } else {
            Reply::json(json!({"result": {}})).held()
        }
    });
    let server = server(
        &[
            ("REALTIME_SUBSCRIBE_PROXY_URL", backend.url("/subscribe")),
            ("REALTIME_PUBLISH_PROXY_URL", backend.url("/publish")),
            ("REALTIME_PROXY_TIMEOUT", "30s".into()),
        ],
        Some(ROOMS),
    )
    .await;
    let target = format!(
        "/sse?token={}&topic=room:a&topic=room:b&topic=room:c",
        token("alice", &[])
    );
    let addr = server.local();
    let opening = tokio::spawn(async move { sse::open(addr, &target, &[]).await.refused() });
    backend.wait_for("/subscribe", 3, WAIT).await;
    backend.release();
    let (status, body) = tokio::time::timeout(WAIT, opening).await.unwrap().unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["topic"], "room:b",
        "the first refused topic in the query's order: {body}"
    );
    backend.assert_all_signed();
}

#[tokio::test]
async fn a_subscribe_over_the_connections_topic_limit_never_reaches_the_backend() {
    let backend = Backend::start(PROXY_SECRET).await;
    backend.on("/subscribe", |_: &Value| Reply::json(json!({"result": {}})));
    let server = server(
        &[
            ("REALTIME_SUBSCRIBE_PROXY_URL", backend.url("/subscribe")),
            ("REALTIME_PUBLISH_PROXY_URL", backend.url("/publish")),
            ("REALTIME_MAX_SUBSCRIPTIONS", "1".into()),
        ],
        Some(ROOMS),
    )
    .await;
    let (mut alice, _) = accepted(&ws_url(&server, Some(&token("alice", &[]))), &[]).await;
    assert_eq!(subscribe(&mut alice, "room:a").await["type"], "subscribed");
    assert_eq!(
        subscribe(&mut alice, "room:b").await["code"],
        "limit_exceeded"
    );
    let asked: Vec<Value> = backend
        .seen_at("/subscribe")
        .iter()
        .map(|s| s.body["topic"].clone())
        .collect();
    assert_eq!(asked, [json!("room:a")], "room:b was refused before asking");
}
