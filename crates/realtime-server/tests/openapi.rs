//! The OpenAPI document against the real binary: `/api/openapi.json` is valid
//! OpenAPI 3.1 served without the API key, every operation it lists is served
//! (no router 404 or 405, and an answer it documents), every error answer is
//! documented with the one error schema, the API key guards exactly the
//! operations that say so, and docs/OPERATIONS.md lists the same API routes.

mod binary;

use std::collections::BTreeSet;

use reqwest::{Client, Method};
use serde_json::{Value, json};

const API_KEY: &str = "openapi-test-api-key";
const SECRET: &str = "openapi-test-secret-0123456789abcdef";

/// The binary in production mode on a free port, with history and presence on
/// `chat` topics so the example topic reaches those handlers' answers.
async fn start() -> (binary::Running, tempdir::Dir) {
    let dir = tempdir::Dir::new("openapi");
    let config = dir.path().join("realtime.toml");
    std::fs::write(
        &config,
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\n\
         publish = \"authenticated\"\nhistory_size = 10\nhistory_ttl = \"10m\"\npresence = true\n",
    )
    .unwrap();
    let running = binary::start(
        &[
            ("REALTIME_LISTEN", "127.0.0.1:0"),
            ("REALTIME_JWT_SECRET", SECRET),
            ("REALTIME_API_KEY", API_KEY),
            ("REALTIME_CONFIG", config.to_str().unwrap()),
        ],
        &[],
    )
    .await
    .listening();
    (running, dir)
}

mod tempdir {
    //! A directory removed when dropped.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "realtime-{name}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The served document, fetched without any key.
async fn document(server: &binary::Running) -> (String, Value) {
    let response = Client::new()
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

/// Every (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut list = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            list.push((path.clone(), method, operation.clone()));
        }
    }
    list
}

/// The operation's path with each `{parameter}` replaced by a value of its kind.
fn concrete(path: &str) -> String {
    path.replace("{topic}", "chat:lobby")
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{user_id}", "alice")
        .replace("{role}", "admin")
}

/// A body the operation's request schema accepts.
fn body_for(operation: &Value) -> Option<Value> {
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    match schema.as_str()? {
        "#/components/schemas/RouteMessage" | "#/components/schemas/TopicMessage" => {
            Some(json!({"type": "openapi.test"}))
        }
        "#/components/schemas/SubscribeBody" => Some(json!({"topic": "chat:lobby"})),
        other => panic!("no test body for {other}"),
    }
}

fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/metrics" | "/api/openapi.json")
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    out.push((at.clone(), v.as_str().expect("a $ref is a string")));
                } else {
                    refs(v, format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_served_without_the_key() {
    let (server, _dir) = start().await;
    let (text, doc) = document(&server).await;

    // A second implementation reads it as OpenAPI 3.1.
    let spec = oas3::from_json(&text).expect("the document parses as OpenAPI");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1), "{version}");
    assert_eq!(spec.info.title, "realtime-server");
    assert_eq!(spec.info.version, env!("CARGO_PKG_VERSION"));
    assert!(
        spec.operations().count() >= 20,
        "{}",
        spec.operations().count()
    );

    // Every reference resolves inside the document.
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(!found.is_empty());
    for (at, target) in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: external $ref {target}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: dangling $ref {target}"
        );
    }

    // The security scheme is the API key as a bearer token, required by default.
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"],
        json!({"type": "http", "scheme": "bearer", "description": "The server's API key (`api_key`)."})
    );
    assert_eq!(doc["security"], json!([{"api_key": []}]));

    // Each path's `{parameters}` are declared as path parameters, and only those.
    for (path, method, operation) in operations(&doc) {
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{method} {path}: {p}");
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(in_template, declared, "{method} {path}");
    }

    // The longest topic name is this server's.
    assert_eq!(doc["components"]["schemas"]["Topic"]["maxLength"], 255);
}

#[tokio::test]
async fn every_documented_operation_is_served_with_an_answer_it_documents() {
    let (server, _dir) = start().await;
    let (_, doc) = document(&server).await;
    let http = Client::new();
    let mut served = 0;
    for (path, method, operation) in operations(&doc) {
        let mut request = http
            .request(method.clone(), server.url(&concrete(&path)))
            .bearer_auth(API_KEY);
        if let Some(body) = body_for(&operation) {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_ne!(
            status, 405,
            "{method} {path}: the router refused the method: {text}"
        );
        assert!(
            !(status == 404 && body["error"] == "not_found"),
            "{method} {path}: the router has no such route: {text}"
        );
        assert!(
            operation["responses"].get(status.to_string()).is_some(),
            "{method} {path}: answered {status}, which it does not document: {text}"
        );
        if status >= 400 && path != "/health" {
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{method} {path}: {status} {text}"
            );
        }
        served += 1;
    }
    assert_eq!(served, operations(&doc).len());
    assert!(served >= 20, "{served}");
}

#[tokio::test]
async fn every_operation_documents_its_errors_with_the_error_schema() {
    let (server, _dir) = start().await;
    let (_, doc) = document(&server).await;
    let error_schema = json!({"$ref": "#/components/schemas/ApiError"});
    assert_eq!(
        doc["components"]["schemas"]["ApiError"]["required"],
        json!(["error", "message"])
    );
    for (path, method, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success answer"
        );
        let errors: Vec<(&String, &Value)> = responses
            .iter()
            .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
            .collect();
        assert!(
            !errors.is_empty(),
            "{method} {path}: no error answer documented"
        );
        for (status, response) in errors {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}: no description"
            );
            let schema = &response["content"]["application/json"]["schema"];
            if path == "/health" {
                // Health answers its own body when it is not healthy.
                assert_eq!(schema["$ref"], "#/components/schemas/Health");
            } else {
                assert_eq!(schema, &error_schema, "{method} {path} {status}");
            }
        }
        if is_public(&path) {
            assert_eq!(operation["security"], json!([{}]), "{method} {path}");
        } else {
            assert!(
                operation.get("security").is_none(),
                "{method} {path}: overrides the API key"
            );
            assert!(
                responses.contains_key("401"),
                "{method} {path}: the API key's 401 is not documented"
            );
        }
    }
}

#[tokio::test]
async fn the_api_key_guards_exactly_the_operations_that_say_so() {
    let (server, _dir) = start().await;
    let (_, doc) = document(&server).await;
    let http = Client::new();
    let (mut guarded, mut public) = (0, 0);
    for (path, method, operation) in operations(&doc) {
        let mut request = http.request(method.clone(), server.url(&concrete(&path)));
        if let Some(body) = body_for(&operation) {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if is_public(&path) {
            assert_ne!(status, 401, "{method} {path}: {body}");
            public += 1;
        } else {
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_eq!(body["error"], "unauthorized", "{method} {path}: {body}");
            guarded += 1;
        }
    }
    assert_eq!(public, 3);
    assert!(guarded >= 18, "{guarded}");
}

#[tokio::test]
async fn operations_md_lists_the_documented_api_routes() {
    let (server, _dir) = start().await;
    let (_, doc) = document(&server).await;
    let documented: BTreeSet<String> = operations(&doc)
        .into_iter()
        .filter(|(path, _, _)| path.starts_with("/api/"))
        .map(|(path, method, _)| format!("{method} {path}"))
        .collect();

    // The first column of the HTTP API table: `METHOD /api/path[?query]`.
    let docs = include_str!("../../../docs/OPERATIONS.md");
    let section = docs
        .split("\n## HTTP API\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("an HTTP API section");
    let listed: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split('`').next())
        .filter(|route| route.contains(" /api/"))
        .map(|route| route.split(['?', '[']).next().unwrap().to_owned())
        .collect();
    assert_eq!(listed, documented);
}
