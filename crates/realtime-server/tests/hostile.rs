//! Hostile input, table-driven, against a real server: client frames, handshake
//! tokens and HTTP API bodies, each with the exact documented outcome (an error
//! frame code, a close code, a 401 reason or an HTTP status and error code). A
//! panic hook records any panic in the server's tasks, which must never happen.

mod common;

use std::sync::{Mutex, OnceLock};

use common::*;
use futures_util::SinkExt;
use realtime_server::Options;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// What is sent.
enum Input {
    /// A text frame.
    Text(String),
    /// A text frame whose payload is not checked as UTF-8 by the client.
    RawText(Vec<u8>),
    Binary(Vec<u8>),
    /// A handshake with this token in the query string, on the HS256 server.
    Token(String),
    /// A handshake with this token on the RS256 server.
    RsToken(String),
    /// An API request: method, path, body, `Authorization` header value.
    Api(&'static str, String, Vec<u8>, Option<String>),
}

/// What must come back.
enum Outcome {
    /// An `error` frame with this code (and `ref`, when given); the connection stays.
    Error(&'static str, Option<Value>),
    /// A normal reply frame of this type; the connection stays.
    Reply(&'static str),
    /// The connection is closed with this code.
    Close(u16),
    /// The handshake is refused with 401 and this reason.
    Unauthorized(&'static str),
    /// The API answers this status with this `error` code.
    Http(u16, &'static str),
}

struct Case {
    name: &'static str,
    input: Input,
    outcome: Outcome,
}

fn case(name: &'static str, input: Input, outcome: Outcome) -> Case {
    Case {
        name,
        input,
        outcome,
    }
}

fn text(s: impl Into<String>) -> Input {
    Input::Text(s.into())
}

fn bad(r: Option<Value>) -> Outcome {
    Outcome::Error("bad_request", r)
}

const ISSUER: &str = "boundary";
const AUDIENCE: &str = "realtime";

/// Valid claims for the hostile server (issuer and audience configured).
fn good_claims() -> Value {
    let mut c = claims("hostile-user", &[]);
    c["iss"] = json!(ISSUER);
    c["aud"] = json!(AUDIENCE);
    c
}

fn with(field: &str, value: Value) -> Value {
    let mut c = good_claims();
    c[field] = value;
    c
}

fn without(field: &str) -> Value {
    let mut c = good_claims();
    c.as_object_mut().unwrap().remove(field);
    c
}

fn signed(c: &Value) -> String {
    sign_hs256(c, SECRET)
}

/// A token with a hand-written header and claims and the given signature part.
fn forged(header: &str, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.to_string().as_bytes()),
        signature
    )
}

/// HS256 signed with the bytes of the RS256 server's public key (key confusion).
fn hs256_with_public_key() -> String {
    let pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("confused", &[]),
        &jsonwebtoken::EncodingKey::from_secret(&pem),
    )
    .unwrap()
}

fn frame_cases() -> Vec<Case> {
    let deep_array = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_message = format!(
        r#"{{"action":"publish","topic":"chat:x","message":{{"type":"t","x":{}1{}}}}}"#,
        r#"{"a":"#.repeat(1000),
        "}".repeat(1000)
    );
    vec![
        case(
            "truncated object",
            text(r#"{"action":"subscribe","topic":"a""#),
            bad(None),
        ),
        case("truncated string", text(r#"{"action":"sub"#), bad(None)),
        case("empty frame", text(""), bad(None)),
        case("whitespace only", text("   \n\t"), bad(None)),
        case("null", text("null"), bad(None)),
        case("a number", text("42"), bad(None)),
        case("a string", text(r#""subscribe""#), bad(None)),
        case("an array", text("[]"), bad(None)),
        case("deeply nested arrays", text(deep_array), bad(None)),
        case("deeply nested message", text(deep_message), bad(None)),
        case(
            "number out of range",
            text(r#"{"action":"ping","ref":1e999}"#),
            bad(None),
        ),
        case(
            "huge integer ref is echoed as a number",
            text(r#"{"action":"ping","ref":123456789012345678901234567890}"#),
            Outcome::Reply("pong"),
        ),
        case(
            "huge number in a message",
            text(r#"{"action":"publish","topic":"chat:x","message":{"type":"t","n":-1e400}}"#),
            bad(None),
        ),
        case(
            "action is a number",
            text(r#"{"action":5,"ref":"r"}"#),
            bad(Some(json!("r"))),
        ),
        case("action is null", text(r#"{"action":null}"#), bad(None)),
        case(
            "action is an array",
            text(r#"{"action":["ping"]}"#),
            bad(None),
        ),
        case(
            "action missing",
            text(r#"{"ref":"r"}"#),
            bad(Some(json!("r"))),
        ),
        case(
            "topic is a number",
            text(r#"{"action":"subscribe","topic":7}"#),
            bad(None),
        ),
        case(
            "topic is an object",
            text(r#"{"action":"subscribe","topic":{"a":1}}"#),
            bad(None),
        ),
        case(
            "topic missing",
            text(r#"{"action":"unsubscribe","ref":1}"#),
            bad(Some(json!(1))),
        ),
        case(
            "message is a string",
            text(r#"{"action":"publish","topic":"chat:x","message":"hi"}"#),
            bad(None),
        ),
        case(
            "message without type",
            text(r#"{"action":"publish","topic":"chat:x","message":{"text":"hi"}}"#),
            bad(None),
        ),
        case(
            "message type is a number",
            text(r#"{"action":"publish","topic":"chat:x","message":{"type":1}}"#),
            bad(None),
        ),
        case(
            "ref is an object",
            text(r#"{"action":"ping","ref":{"a":1}}"#),
            bad(None),
        ),
        case(
            "ref is an array",
            text(r#"{"action":"ping","ref":[1]}"#),
            bad(None),
        ),
        case(
            "ref is a boolean",
            text(r#"{"action":"ping","ref":true}"#),
            bad(None),
        ),
        case(
            "refresh token is a number",
            text(r#"{"action":"refresh","token":1}"#),
            bad(None),
        ),
        case(
            "refresh without token",
            text(r#"{"action":"refresh","ref":2}"#),
            bad(Some(json!(2))),
        ),
        case(
            "refresh with garbage",
            text(r#"{"action":"refresh","token":"x.y.z","ref":3}"#),
            Outcome::Error("invalid_token", Some(json!(3))),
        ),
        case(
            "lone surrogate escape",
            text(r#"{"action":"subscribe","topic":"\ud800"}"#),
            bad(None),
        ),
        case(
            "byte order mark",
            text("\u{feff}{\"action\":\"ping\"}"),
            bad(None),
        ),
        case(
            "NUL in topic",
            text(r#"{"action":"subscribe","topic":"a\u0000b"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "newline in topic",
            text(r#"{"action":"subscribe","topic":"a\nb"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "escape sequence in topic",
            text(r#"{"action":"subscribe","topic":"\u001b[31mred"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "DEL in topic",
            text(r#"{"action":"subscribe","topic":"a\u007f"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "right-to-left override in topic",
            text(r#"{"action":"subscribe","topic":"chat:\u202eevil"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "emoji in topic",
            text(r#"{"action":"subscribe","topic":"chat:🔥"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "path traversal in topic",
            text(r#"{"action":"subscribe","topic":"../../etc/passwd"}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "empty topic",
            text(r#"{"action":"subscribe","topic":""}"#),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "topic over 255 bytes",
            text(json!({"action":"subscribe","topic":"a".repeat(256)}).to_string()),
            Outcome::Error("invalid_topic", None),
        ),
        case(
            "10,000-character action",
            text(json!({"action":"x".repeat(10_000)}).to_string()),
            Outcome::Error("unknown_action", None),
        ),
        case(
            "empty action",
            text(r#"{"action":""}"#),
            Outcome::Error("unknown_action", None),
        ),
        case(
            "action in capitals",
            text(r#"{"action":"SUBSCRIBE","topic":"a"}"#),
            Outcome::Error("unknown_action", None),
        ),
        case(
            "unknown action keeps its ref",
            text(r#"{"action":"dance","ref":"d"}"#),
            Outcome::Error("unknown_action", Some(json!("d"))),
        ),
        case(
            "NUL in action",
            text(r#"{"action":"ping\u0000"}"#),
            Outcome::Error("unknown_action", None),
        ),
        case(
            "duplicate keys: the last wins",
            text(r#"{"action":"ping","action":"subscribe"}"#),
            bad(None),
        ),
        case(
            "unknown fields are ignored",
            text(r#"{"action":"ping","evil":{"__proto__":1}}"#),
            Outcome::Reply("pong"),
        ),
        case(
            "another user's topic",
            text(r#"{"action":"subscribe","topic":"user:someone-else"}"#),
            Outcome::Error("forbidden", None),
        ),
        case(
            "a role topic without the role",
            text(r#"{"action":"subscribe","topic":"role:admin"}"#),
            Outcome::Error("forbidden", None),
        ),
        case(
            "publishing where clients may not",
            text(r#"{"action":"publish","topic":"news","message":{"type":"t"}}"#),
            Outcome::Error("forbidden", None),
        ),
        case(
            "binary frame",
            Input::Binary(vec![0, 159, 146, 150]),
            bad(None),
        ),
        case(
            "invalid UTF-8 in a text frame",
            Input::RawText(vec![b'{', 0xff, 0xfe, b'}']),
            Outcome::Close(1007),
        ),
        case(
            "overlong UTF-8 encoding",
            Input::RawText(vec![0xc0, 0xaf]),
            Outcome::Close(1007),
        ),
        case(
            "frame over 64 KiB",
            text(json!({"action":"ping","pad":"x".repeat(70_000)}).to_string()),
            Outcome::Close(1009),
        ),
    ]
}

fn token_cases() -> Vec<Case> {
    let unauthorized = Outcome::Unauthorized;
    let tampered = {
        let token = signed(&good_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let evil = b64url(with("sub", json!("admin")).to_string().as_bytes());
        parts[1] = &evil;
        parts.join(".")
    };
    vec![
        case(
            "alg none",
            Input::Token(forged(r#"{"alg":"none","typ":"JWT"}"#, &good_claims(), "")),
            unauthorized("invalid_algorithm"),
        ),
        case(
            "alg None",
            Input::Token(forged(r#"{"alg":"None"}"#, &good_claims(), "")),
            unauthorized("invalid_algorithm"),
        ),
        case(
            "alg HS512",
            Input::Token(forged(r#"{"alg":"HS512"}"#, &good_claims(), "c2ln")),
            unauthorized("invalid_algorithm"),
        ),
        case(
            "expired",
            Input::Token(signed(&with("exp", json!(now() - 60)))),
            unauthorized("expired"),
        ),
        case(
            "not yet valid (nbf)",
            Input::Token(signed(&with("nbf", json!(now() + 600)))),
            unauthorized("not_yet_valid"),
        ),
        case(
            "issued in the future (iat)",
            Input::Token(signed(&with("iat", json!(now() + 600)))),
            unauthorized("not_yet_valid"),
        ),
        case(
            "wrong issuer",
            Input::Token(signed(&with("iss", json!("someone")))),
            unauthorized("invalid_issuer"),
        ),
        case(
            "wrong audience",
            Input::Token(signed(&with("aud", json!(["other"])))),
            unauthorized("invalid_audience"),
        ),
        case(
            "tampered payload",
            Input::Token(tampered),
            unauthorized("bad_signature"),
        ),
        case(
            "missing sub",
            Input::Token(signed(&without("sub"))),
            unauthorized("invalid_claims"),
        ),
        case(
            "sub is a number",
            Input::Token(signed(&with("sub", json!(1)))),
            unauthorized("invalid_claims"),
        ),
        case(
            "missing exp",
            Input::Token(signed(&without("exp"))),
            unauthorized("invalid_claims"),
        ),
        case(
            "exp is a string",
            Input::Token(signed(&with("exp", json!("tomorrow")))),
            unauthorized("invalid_claims"),
        ),
        case(
            "roles is a string",
            Input::Token(signed(&with("roles", json!("admin")))),
            unauthorized("invalid_claims"),
        ),
        case(
            "two parts",
            Input::Token("eyJhbGciOiJIUzI1NiJ9.e30".into()),
            unauthorized("malformed"),
        ),
        case(
            "header not base64url",
            Input::Token("!!!.e30.sig".into()),
            unauthorized("malformed"),
        ),
        case(
            "header not JSON",
            Input::Token(format!("{}.e30.sig", b64url(b"not json"))),
            unauthorized("malformed"),
        ),
        case(
            "empty signature",
            Input::Token(forged(r#"{"alg":"HS256"}"#, &good_claims(), "")),
            unauthorized("bad_signature"),
        ),
        case(
            "kid path traversal with a wrong key",
            Input::Token(forged(
                r#"{"alg":"HS256","kid":"../../../dev/null"}"#,
                &good_claims(),
                "AAAA",
            )),
            unauthorized("bad_signature"),
        ),
        case(
            "no token at all",
            Input::Token(String::new()),
            unauthorized("missing_token"),
        ),
        case(
            "HS256 signed with the RS256 public key",
            Input::RsToken(hs256_with_public_key()),
            unauthorized("invalid_algorithm"),
        ),
        case(
            "ES256 token on an RS256 server",
            Input::RsToken(sign_es256(&claims("es", &[]))),
            unauthorized("invalid_algorithm"),
        ),
    ]
}

fn api_cases() -> Vec<Case> {
    let key = Some(format!("Bearer {API_KEY}"));
    let post =
        |path: &str, body: &[u8]| Input::Api("POST", path.into(), body.to_vec(), key.clone());
    vec![
        case(
            "API: body not JSON",
            post("/api/broadcast", b"{oops"),
            Outcome::Http(400, "invalid_json"),
        ),
        case(
            "API: empty body",
            post("/api/broadcast", b""),
            Outcome::Http(400, "invalid_json"),
        ),
        case(
            "API: body is an array",
            post("/api/broadcast", b"[1]"),
            Outcome::Http(400, "invalid_message"),
        ),
        case(
            "API: message without type",
            post("/api/broadcast", br#"{"text":"hi"}"#),
            Outcome::Http(400, "invalid_message"),
        ),
        case(
            "API: a direct message posing as a topic message",
            post(
                "/api/users/hostile-user/messages",
                br#"{"type":"t","topic":"order:1"}"#,
            ),
            Outcome::Http(400, "invalid_message"),
        ),
        case(
            "API: invalid UTF-8 body",
            post("/api/broadcast", &[b'{', 0xff, b'}']),
            Outcome::Http(400, "invalid_json"),
        ),
        case(
            "API: deeply nested body",
            post(
                "/api/broadcast",
                format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).as_bytes(),
            ),
            Outcome::Http(400, "invalid_json"),
        ),
        case(
            "API: body over 1 MiB",
            post("/api/broadcast", &vec![b' '; 2 * 1024 * 1024]),
            Outcome::Http(413, "payload_too_large"),
        ),
        case(
            "API: NUL in a topic path",
            post("/api/topics/a%00b/messages", br#"{"type":"t"}"#),
            Outcome::Http(400, "invalid_topic"),
        ),
        case(
            "API: topic path over 255 bytes",
            post(
                &format!("/api/topics/{}/messages", "a".repeat(300)),
                br#"{"type":"t"}"#,
            ),
            Outcome::Http(400, "invalid_topic"),
        ),
        case(
            "API: connection id not a UUID",
            post("/api/connections/not-a-uuid/messages", br#"{"type":"t"}"#),
            Outcome::Http(404, "connection_not_found"),
        ),
        case(
            "API: subscription topic is a number",
            post(
                "/api/connections/00000000-0000-0000-0000-000000000000/subscriptions",
                br#"{"topic":5}"#,
            ),
            Outcome::Http(400, "bad_request"),
        ),
        case(
            "API: missing API key",
            Input::Api(
                "POST",
                "/api/broadcast".into(),
                br#"{"type":"t"}"#.to_vec(),
                None,
            ),
            Outcome::Http(401, "unauthorized"),
        ),
        case(
            "API: wrong API key",
            Input::Api(
                "POST",
                "/api/broadcast".into(),
                br#"{"type":"t"}"#.to_vec(),
                Some("Bearer guess".into()),
            ),
            Outcome::Http(401, "unauthorized"),
        ),
        case(
            "API: unknown scope",
            Input::Api(
                "GET",
                "/api/connections?scope=galaxy".into(),
                Vec::new(),
                key.clone(),
            ),
            Outcome::Http(400, "bad_request"),
        ),
        case(
            "API: unknown endpoint",
            Input::Api(
                "GET",
                "/api/../../etc/passwd".into(),
                Vec::new(),
                key.clone(),
            ),
            Outcome::Http(404, "not_found"),
        ),
    ]
}

/// Every panic anywhere in this process, recorded by a hook.
fn panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            panics().lock().unwrap().push(info.to_string());
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// A server with an issuer and audience configured, and one pinned to RS256.
async fn servers() -> (TestServer, TestServer) {
    let hs = TestServer::start_with(Options {
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some(AUDIENCE.into()),
        ..options()
    })
    .await;
    let rs = TestServer::start_with(Options {
        jwt_secret: None,
        jwt_public_key: Some(fixture("rsa-public.pem")),
        ..options()
    })
    .await;
    (hs, rs)
}

/// A client of the hostile server, after its welcome.
async fn connect(hs: &TestServer) -> Client {
    let mut client = Client::connect(&hs.ws_url(&signed(&good_claims()))).await;
    assert_eq!(client.recv().await["type"], "welcome");
    client
}

async fn run(case: &Case, hs: &TestServer, rs: &TestServer) {
    let name = case.name;
    match &case.input {
        Input::Token(t) | Input::RsToken(t) => {
            let server = if matches!(case.input, Input::RsToken(_)) {
                rs
            } else {
                hs
            };
            let query = (!t.is_empty()).then_some(t.as_str());
            let Outcome::Unauthorized(reason) = case.outcome else {
                panic!("{name}: token cases expect a 401");
            };
            match server.handshake(query, None).await {
                Handshake::Refused(status, body) => {
                    assert_eq!(status, 401, "{name}: {body}");
                    assert_eq!(body["reason"], reason, "{name}: {body}");
                    let message = body["message"].as_str().unwrap_or_default();
                    assert!(
                        t.is_empty() || !message.contains(t.as_str()),
                        "{name}: token in message"
                    );
                }
                Handshake::Accepted(_) => panic!("{name}: accepted"),
            }
        }
        Input::Api(method, path, body, auth) => {
            let Outcome::Http(status, code) = case.outcome else {
                panic!("{name}: API cases expect an HTTP outcome");
            };
            let mut request = hs
                .http
                .request(method.parse().unwrap(), hs.url(path))
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let (got, reply) = answer(request).await;
            assert_eq!(got, status, "{name}: {reply}");
            assert_eq!(reply["error"], code, "{name}: {reply}");
            assert!(reply["message"].is_string(), "{name}: {reply}");
        }
        frame => {
            let mut client = connect(hs).await;
            let message = match frame {
                Input::Text(t) => Message::Text(t.as_str().into()),
                Input::RawText(bytes) => Message::Frame(Frame::message(
                    bytes.clone(),
                    OpCode::Data(Data::Text),
                    true,
                )),
                Input::Binary(bytes) => Message::Binary(bytes.clone().into()),
                _ => unreachable!(),
            };
            client.ws.send(message).await.unwrap();
            match &case.outcome {
                Outcome::Error(code, reference) => {
                    let reply = client.recv().await;
                    assert_eq!(reply["type"], "error", "{name}: {reply}");
                    assert_eq!(reply["code"], *code, "{name}: {reply}");
                    assert_eq!(
                        reply.get("ref"),
                        reference.as_ref(),
                        "{name}: the ref is echoed when it could be read"
                    );
                    let text = reply["message"].as_str().unwrap();
                    assert!(text.len() < 1024, "{name}: error messages stay short");
                    client.assert_nothing_pending().await;
                }
                Outcome::Reply(kind) => {
                    let reply = client.recv().await;
                    assert_eq!(reply["type"], *kind, "{name}: {reply}");
                    client.assert_nothing_pending().await;
                }
                Outcome::Close(code) => client.expect_close(*code).await,
                _ => panic!("{name}: frame cases expect a frame or a close"),
            }
        }
    }
}

#[tokio::test]
async fn every_hostile_input_gets_its_documented_outcome() {
    panics();
    let (hs, rs) = servers().await;
    let cases: Vec<Case> = [frame_cases(), token_cases(), api_cases()]
        .into_iter()
        .flatten()
        .collect();
    assert!(cases.len() >= 50, "the table has {} cases", cases.len());
    for case in &cases {
        run(case, &hs, &rs).await;
    }
    // Still serving, with nothing left behind.
    hs.wait_for_connections(0).await;
    let mut client = connect(&hs).await;
    client.assert_nothing_pending().await;
    let (status, health) = hs.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let recorded = panics().lock().unwrap().clone();
    assert!(recorded.is_empty(), "panics: {recorded:?}");
}
