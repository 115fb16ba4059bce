//! Every option of the option table, set through each of its sources in turn
//! (flag, `REALTIME_*` variable, TOML file) on the real binary with
//! `--check-config`, reaches the effective setting it names; and the options table
//! in docs/OPERATIONS.md is the option table.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use realtime_server::config::{OPTIONS, OptionSpec};
use serde_json::{Value, json};

const SECRET: &str = "sources-test-secret";
const API_KEY: &str = "sources-test-api-key";
const WEBHOOK_SECRET: &str = "sources-test-webhook-secret";
const PROXY_SECRET: &str = "sources-test-proxy-secret";

/// A distinct, non-default value for one option, and what `--check-config` must
/// then show at the option's setting.
struct Sample {
    /// As written after `--flag=` or in the variable.
    text: String,
    /// As written after `key = ` in the file.
    toml: String,
    /// Variables set around it (replacing the production base of secret and API
    /// key), for options that only mean something with others.
    context: Vec<(&'static str, String)>,
    expected: Value,
    /// Must not appear anywhere in the output.
    hidden: Option<&'static str>,
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn base() -> Vec<(&'static str, String)> {
    vec![
        ("REALTIME_JWT_SECRET", SECRET.into()),
        ("REALTIME_API_KEY", API_KEY.into()),
    ]
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// The sample for each option; an option added to the table without one fails
/// the test here.
fn sample(option: &OptionSpec, scratch: &Path) -> Sample {
    let plain = |text: &str, expected: Value| Sample {
        text: text.into(),
        toml: text.into(),
        context: base(),
        expected,
        hidden: None,
    };
    let string = |text: &str| Sample {
        toml: quoted(text),
        ..plain(text, json!(text))
    };
    let with = |mut sample: Sample, context: Vec<(&'static str, String)>| {
        sample.context = context;
        sample
    };
    let only_api_key = || vec![("REALTIME_API_KEY", API_KEY.to_owned())];
    let connect_proxy = || {
        let mut context = base();
        context.push((
            "REALTIME_CONNECT_PROXY_URL",
            "https://backend.example/connect".into(),
        ));
        context.push(("REALTIME_PROXY_SECRET", PROXY_SECRET.into()));
        context
    };
    let redis = || {
        let mut context = base();
        context.push(("REALTIME_PROVIDER", "redis".into()));
        context
    };
    match option.name {
        "listen" => string("127.0.0.1:4567"),
        "jwt_secret" => Sample {
            hidden: Some("a-secret-sample"),
            ..with(
                Sample {
                    expected: json!("<set>"),
                    ..string("a-secret-sample")
                },
                only_api_key(),
            )
        },
        "jwt_algorithm" => {
            let mut context = only_api_key();
            context.push(("REALTIME_JWT_PUBLIC_KEY", fixture("ec-public.pem")));
            with(string("ES256"), context)
        }
        "jwt_public_key" => with(string(&fixture("rsa-public.pem")), only_api_key()),
        "jwt_jwks_file" => with(string(&fixture("jwks.json")), only_api_key()),
        "jwt_previous_secret" => Sample {
            expected: json!("<set>"),
            hidden: Some("a-previous-sample"),
            ..string("a-previous-sample")
        },
        "jwt_issuer" => string("https://issuer.example"),
        "jwt_audience" => string("audience-sample"),
        "jwt_leeway" => plain("7", json!(7)),
        "api_key" => Sample {
            expected: json!("<set>"),
            hidden: Some("an-api-key-sample"),
            context: vec![("REALTIME_JWT_SECRET", SECRET.into())],
            ..string("an-api-key-sample")
        },
        "max_message_size" => plain("4096", json!(4096)),
        "outbound_queue" => plain("77", json!(77)),
        "outbound_queue_bytes" => plain("8192", json!(8192)),
        "max_topic_length" => plain("100", json!(100)),
        "max_subscriptions" => plain("5", json!(5)),
        "max_connections_per_user" => plain("3", json!(3)),
        "command_rate" => plain("5", json!(5.0)),
        "command_burst" => plain("9", json!(9.0)),
        "ping_interval" => string("3s"),
        "pong_timeout" => string("4s"),
        "write_timeout" => string("6s"),
        "shutdown_timeout" => string("2s"),
        "header_read_timeout" => string("2s"),
        "keep_alive_timeout" => string("7s"),
        "upgrade_timeout" => string("3s"),
        "request_timeout" => string("4s"),
        "max_connections" => plain("12", json!(12)),
        "client_publish" => Sample {
            toml: r#"["chat:*", "news"]"#.into(),
            ..plain("chat:*,news", json!(["chat:*", "news"]))
        },
        "allowed_origins" => Sample {
            toml: r#"["https://a.example", "https://b.example"]"#.into(),
            ..plain(
                "https://a.example,https://b.example",
                json!(["https://a.example", "https://b.example"]),
            )
        },
        "provider" => string("redis"),
        "redis_url" => Sample {
            expected: json!("redis://<set>@127.0.0.1:6390"),
            hidden: Some("hunter2"),
            ..with(string("redis://user:hunter2@127.0.0.1:6390"), redis())
        },
        "redis_prefix" => with(string("prefix-sample"), redis()),
        "cluster_heartbeat" => with(string("2s"), redis()),
        "node_id" => string("node-sample"),
        "presence_node_timeout" => string("30s"),
        "presence_offline_grace" => string("2s"),
        "webhook_url" => {
            let mut context = base();
            context.push(("REALTIME_WEBHOOK_SECRET", WEBHOOK_SECRET.into()));
            with(string("https://hooks.example/realtime"), context)
        }
        "webhook_secret" => {
            let mut context = base();
            context.push(("REALTIME_WEBHOOK_URL", "https://hooks.example/realtime".into()));
            Sample {
                expected: json!("<set>"),
                hidden: Some("a-webhook-secret-sample"),
                ..with(string("a-webhook-secret-sample"), context)
            }
        }
        "webhook_timeout" => string("7s"),
        "webhook_max_attempts" => plain("3", json!(3)),
        "webhook_queue_size" => plain("50", json!(50)),
        "connect_proxy_url" | "subscribe_proxy_url" | "publish_proxy_url" => {
            let mut context = base();
            context.push(("REALTIME_PROXY_SECRET", PROXY_SECRET.into()));
            with(string("https://backend.example/proxy"), context)
        }
        "connect_proxy_headers" => Sample {
            toml: r#"["x-tenant", "User-Agent"]"#.into(),
            ..with(
                plain("x-tenant,User-Agent", json!(["x-tenant", "user-agent"])),
                connect_proxy(),
            )
        },
        "proxy_secret" => {
            let mut context = base();
            context.push(("REALTIME_PUBLISH_PROXY_URL", "https://backend.example/publish".into()));
            Sample {
                expected: json!("<set>"),
                hidden: Some("a-proxy-secret-sample"),
                ..with(string("a-proxy-secret-sample"), context)
            }
        }
        "proxy_timeout" => string("250ms"),
        "proxy_max_concurrency" => plain("8", json!(8)),
        "log" => string("debug"),
        "worker_threads" => plain("3", json!(3)),
        "allow_remote_development" => plain("true", json!(true)),
        "config" => {
            let path = scratch.join("empty.toml");
            std::fs::write(&path, "").unwrap();
            string(&path.display().to_string())
        }
        "namespaces" => Sample {
            toml: concat!(
                r#"[{ pattern = "chat", subscribe = "authenticated", publish = "authenticated", "#,
                r#"history_size = 50, history_ttl = "90s", presence = true, join_leave = true, "#,
                r#"subscribe_proxy = true, publish_proxy = true }, "#,
                r#"{ pattern = "ops", subscribe = "authenticated", publish = "nobody" }]"#
            )
            .into(),
            // The namespace names both proxies, which need their URLs.
            context: {
                let mut context = base();
                context.push(("REALTIME_SUBSCRIBE_PROXY_URL", "https://backend.example/s".into()));
                context.push(("REALTIME_PUBLISH_PROXY_URL", "https://backend.example/p".into()));
                context.push(("REALTIME_PROXY_SECRET", PROXY_SECRET.into()));
                context
            },
            ..plain(
                "",
                json!([
                    {"pattern": "chat", "subscribe": "authenticated", "publish": "authenticated",
                     "history_size": 50, "history_ttl": "1m 30s", "presence": true, "join_leave": true,
                     "subscribe_proxy": true, "publish_proxy": true},
                    {"pattern": "ops", "subscribe": "authenticated", "publish": "nobody",
                     "history_size": null, "history_ttl": null, "presence": false, "join_leave": false,
                     "subscribe_proxy": false, "publish_proxy": false},
                ]),
            )
        },
        "default_namespace" => Sample {
            toml: r#"{ subscribe = "nobody", publish = { roles = ["admin"] }, history_size = 7, history_ttl = "1h", presence = true }"#.into(),
            ..plain(
                "",
                json!({"subscribe": "nobody", "publish": {"roles": ["admin"]},
                       "history_size": 7, "history_ttl": "1h", "presence": true, "join_leave": false}),
            )
        },
        other => panic!("option `{other}` has no sample in this test: add one"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Flag,
    Environment,
    File,
}

/// Runs `realtime-server --check-config` with only `env` in its environment.
fn check_config(env: &[(&str, String)], args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("--check-config")
        .args(args)
        .output()
        .expect("realtime-server runs")
}

/// The effective settings, or the error message when the configuration is refused.
fn effective(output: &Output) -> Result<Value, String> {
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).expect("JSON on stdout")),
        Some(2) => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
        other => panic!(
            "--check-config exited with {other:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_option_takes_effect_from_every_source() {
    let scratch = scratch_dir("sources");
    let mut runs = 0;
    for option in OPTIONS {
        let sample = sample(option, &scratch);
        let setting = |json: &Value| json.pointer(option.setting).cloned();
        let before = effective(&check_config(&sample.context, &[]));
        if let Ok(json) = &before {
            let value = setting(json).unwrap_or_else(|| {
                panic!(
                    "`{}` names the setting {} that --check-config does not show",
                    option.name, option.setting
                )
            });
            assert_ne!(
                value, sample.expected,
                "`{}`: the sample must differ from the value without it",
                option.name
            );
        }
        let sources = [
            option.flag().map(|_| Source::Flag),
            option.env.map(|_| Source::Environment),
            option.key().map(|_| Source::File),
        ];
        for source in sources.into_iter().flatten() {
            let mut env = sample.context.clone();
            let mut args = Vec::new();
            match source {
                Source::Flag => args.push(format!("{}={}", option.flag().unwrap(), sample.text)),
                Source::Environment => env.push((option.env.unwrap(), sample.text.clone())),
                Source::File => {
                    let path = scratch.join(format!("{}.toml", option.name));
                    let key = option.key().unwrap();
                    std::fs::write(&path, format!("{key} = {}\n", sample.toml)).unwrap();
                    args.push(format!("--config={}", path.display()));
                }
            }
            let output = check_config(&env, &args);
            let json = effective(&output)
                .unwrap_or_else(|e| panic!("`{}` from {source:?} was refused: {e}", option.name));
            assert_eq!(
                setting(&json),
                Some(sample.expected.clone()),
                "`{}` set from {source:?} must reach {}",
                option.name,
                option.setting
            );
            if let Some(hidden) = sample.hidden {
                assert!(option.secret, "`{}` is a secret", option.name);
                let printed = String::from_utf8_lossy(&output.stdout);
                assert!(
                    !printed.contains(hidden),
                    "`{}` from {source:?} is printed: {printed}",
                    option.name
                );
            }
            runs += 1;
        }
    }
    assert!(runs >= 2 * OPTIONS.len(), "{runs} runs");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn secrets_are_the_options_whose_values_are_never_shown() {
    let secrets: Vec<&str> = OPTIONS
        .iter()
        .filter(|o| o.secret)
        .map(|o| o.name)
        .collect();
    assert_eq!(
        secrets,
        [
            "jwt_secret",
            "jwt_previous_secret",
            "api_key",
            "redis_url",
            "webhook_secret",
            "proxy_secret"
        ]
    );
}

/// Whether a value shown by `--check-config` is the documented default; `None`
/// when the default is prose ("2 × rate", "one per CPU") rather than a value.
fn is_default(value: &Value, default: &str) -> Option<bool> {
    if default.contains(' ') || default.contains('<') {
        return None;
    }
    let duration = |s: &str| humantime::parse_duration(s).ok();
    Some(match value {
        Value::Null => default == "none",
        Value::String(s) if s.starts_with('<') => return None,
        Value::String(s) => {
            s == default || (duration(s).is_some() && duration(s) == duration(default))
        }
        Value::Number(n) => n.as_f64() == default.parse::<f64>().ok(),
        Value::Bool(b) => b.to_string() == default,
        Value::Array(a) if a.is_empty() => default == "none",
        _ => return None,
    })
}

#[test]
fn documented_defaults_are_the_defaults_that_take_effect() {
    let development = effective(&check_config(&[], &[])).unwrap();
    let redis = effective(&check_config(&[("REALTIME_PROVIDER", "redis".into())], &[])).unwrap();
    let mut checked = 0;
    for option in OPTIONS {
        let mut value = development.pointer(option.setting).unwrap();
        if value.is_null() && option.setting.starts_with("/provider/") {
            value = redis.pointer(option.setting).unwrap();
        }
        if let Some(matches) = is_default(value, option.default) {
            assert!(
                matches,
                "`{}` is documented with default {:?} but starts with {value}",
                option.name, option.default
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} defaults checked");
}

/// The rows of the configuration table in docs/OPERATIONS.md: flag, variable, key
/// and default of each, as written (backticks removed).
fn documented_rows() -> Vec<[String; 4]> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/OPERATIONS.md");
    let text = std::fs::read_to_string(path).unwrap();
    let table = text
        .split("| flag | variable | TOML key | default | meaning |\n|---|---|---|---|---|\n")
        .nth(1)
        .expect("the configuration table in docs/OPERATIONS.md");
    table
        .lines()
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().replace('`', ""))
                .collect();
            [
                cells[0].clone(),
                cells[1].clone(),
                cells[2].trim_matches(['[', ']']).to_owned(),
                cells[3].clone(),
            ]
        })
        .collect()
}

#[test]
fn the_documented_table_is_the_option_table() {
    let none = || "—".to_owned();
    let table: Vec<[String; 4]> = OPTIONS
        .iter()
        .map(|o| {
            [
                o.flag().unwrap_or_else(none),
                o.env.map(str::to_owned).unwrap_or_else(none),
                o.key().unwrap_or_else(none),
                o.default.to_owned(),
            ]
        })
        .collect();
    let documented = documented_rows();
    for (row, option) in documented.iter().zip(&table) {
        assert_eq!(
            row, option,
            "docs/OPERATIONS.md row against the option table"
        );
    }
    assert_eq!(documented.len(), table.len(), "rows in docs/OPERATIONS.md");
}
