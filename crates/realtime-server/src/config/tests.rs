//! Tests of resolving flags, variables and the TOML file into `Settings`.

use super::*;
use realtime_core::policy::builtin_namespaces;
use realtime_core::{Access, HistoryLimits, Rules, TopicPolicy};

fn generated() -> String {
    "generated-0123456789".into()
}

#[test]
fn no_configuration_is_development_mode() {
    let s = Options::default().resolve(generated).unwrap();
    assert!(s.development);
    assert_eq!(s.api_key, generated());
    assert_eq!(s.node_id, "node-generated-01");
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.algorithm, JwtAlgorithm::Hs256);
}

#[test]
fn provider_defaults_to_memory_and_redis_has_defaults() {
    let s = Options::default().resolve(generated).unwrap();
    assert_eq!(s.provider, Provider::Memory);
    let o = Options {
        provider: Some("Redis".into()),
        ..Default::default()
    };
    let s = o.resolve(generated).unwrap();
    assert_eq!(
        s.provider,
        Provider::Redis {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "realtime".into(),
            heartbeat: Duration::from_secs(5)
        }
    );
    let o = Options {
        provider: Some("nats".into()),
        ..Default::default()
    };
    assert!(o.resolve(generated).is_err());
}

#[test]
fn queue_bytes_and_worker_threads_reach_the_settings() {
    let s = Options::default().resolve(generated).unwrap();
    assert_eq!(s.worker_threads, None);
    assert_eq!(s.engine.outbound_queue_bytes, 1024 * 1024);
    let o = Options {
        worker_threads: Some(1),
        outbound_queue_bytes: Some(4096),
        ..Default::default()
    };
    let s = o.resolve(generated).unwrap();
    assert_eq!(s.worker_threads, Some(1));
    assert_eq!(s.engine.outbound_queue_bytes, 4096);
    let zero = Options {
        worker_threads: Some(0),
        ..Default::default()
    };
    assert_eq!(zero.resolve(generated).unwrap().worker_threads, None);
}

#[test]
fn production_requires_an_api_key() {
    let o = Options {
        jwt_secret: Some("s".into()),
        ..Default::default()
    };
    assert!(matches!(o.resolve(generated), Err(ConfigError::Invalid(_))));
    let o = Options {
        jwt_secret: Some("s".into()),
        api_key: Some("k".into()),
        ..Default::default()
    };
    let s = o.resolve(generated).unwrap();
    assert!(!s.development);
}

#[test]
fn public_key_algorithms_need_a_key_file() {
    let o = Options {
        jwt_algorithm: Some("RS256".into()),
        api_key: Some("k".into()),
        ..Default::default()
    };
    assert!(o.resolve(generated).is_err());
    let o = Options {
        jwt_algorithm: Some("none".into()),
        ..Default::default()
    };
    assert!(o.resolve(generated).is_err());
    let o = Options {
        jwt_public_key: Some("k.pem".into()),
        api_key: Some("k".into()),
        ..Default::default()
    };
    assert_eq!(o.resolve(generated).unwrap().algorithm, JwtAlgorithm::Rs256);
}

#[test]
fn file_fills_only_what_flags_left_unset() {
    let dir = std::env::temp_dir().join(format!("rt-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("realtime.toml");
    std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\njwt_secret = \"s\"\napi_key = \"from-file\"\nping_interval = \"3s\"\nclient_publish = [\"chat:*\"]\n",
        )
        .unwrap();
    let o = Options {
        config: Some(path.clone()),
        api_key: Some("from-flag".into()),
        ..Default::default()
    };
    let s = o.merge_file().unwrap().resolve(generated).unwrap();
    assert_eq!(s.listen.port(), 9999);
    assert_eq!(s.api_key, "from-flag");
    assert_eq!(s.engine.ping_interval, Duration::from_secs(3));
    assert!(s.engine.topic_policy.publish[0].matches("chat:x"));
    std::fs::write(&path, "no_such_option = 1\n").unwrap();
    let o = Options {
        config: Some(path),
        ..Default::default()
    };
    assert!(matches!(o.merge_file(), Err(ConfigError::ParseFile { .. })));
}

/// Settings from a config file's text (flags and environment left unset).
fn from_toml(text: &str) -> Result<Settings, ConfigError> {
    let options: Options = toml::from_str(text).map_err(|source| ConfigError::ParseFile {
        path: "test.toml".into(),
        source,
    })?;
    options.resolve(generated)
}

fn invalid(text: &str) -> String {
    match from_toml(text) {
        Err(ConfigError::Invalid(message)) => message,
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

/// The default list exactly as docs/OPERATIONS.md prints it.
const DOCUMENTED_DEFAULT: &str = r#"
[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "nobody"

[[namespaces]]
pattern = "role:{role}"
subscribe = "owner"
publish = "nobody"

[default_namespace]
subscribe = "authenticated"
publish = "nobody"
"#;

#[test]
fn no_namespaces_configured_is_the_default_policy() {
    let s = from_toml("").unwrap();
    assert_eq!(s.engine.topic_policy, TopicPolicy::default());
    let s = from_toml(DOCUMENTED_DEFAULT).unwrap();
    assert_eq!(
        s.engine.topic_policy,
        TopicPolicy::default(),
        "the documented default list is the built-in one"
    );
}

#[test]
fn configured_namespaces_replace_the_builtin_ones() {
    let s = from_toml(
        r#"
client_publish = ["news:*"]

[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"

[[namespaces]]
pattern = "user:{sub}"
subscribe = "owner"
publish = "owner"

[[namespaces]]
pattern = "ops"
subscribe = { roles = ["admin", "ops"] }
publish = "nobody"
"#,
    )
    .unwrap();
    let policy = &s.engine.topic_policy;
    let listed: Vec<(&str, &Rules)> = policy
        .namespaces
        .iter()
        .map(|n| (n.pattern().as_str(), n.rules()))
        .collect();
    let rules = |subscribe, publish| Rules { subscribe, publish };
    assert_eq!(
        listed,
        vec![
            ("chat", &rules(Access::Authenticated, Access::Authenticated)),
            ("user:{sub}", &rules(Access::Owner, Access::Owner)),
            (
                "ops",
                &rules(
                    Access::Roles(vec!["admin".into(), "ops".into()]),
                    Access::Nobody
                )
            ),
        ]
    );
    assert!(
        policy.namespace_for("role:admin").is_none(),
        "role:{{role}} is not kept"
    );
    assert_eq!(policy.default, Rules::default());
    assert!(policy.publish[0].matches("news:today"));

    let s = from_toml(
        "[default_namespace]\nsubscribe = \"nobody\"\npublish = { roles = [\"admin\"] }\n",
    )
    .unwrap();
    let policy = &s.engine.topic_policy;
    assert_eq!(
        policy.namespaces,
        builtin_namespaces(),
        "only the default changed"
    );
    assert_eq!(
        policy.default,
        rules(Access::Nobody, Access::Roles(vec!["admin".into()]))
    );

    let s = from_toml("namespaces = []\n").unwrap();
    assert!(
        s.engine.topic_policy.namespaces.is_empty(),
        "an empty list is a list"
    );
}

#[test]
fn invalid_namespaces_name_the_namespace() {
    let owner = invalid(
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
    );
    assert_eq!(
        owner,
        "topic policy: namespace \"chat\": subscribe = \"owner\" needs a `{sub}` or `{role}` placeholder in the pattern"
    );
    let wildcard = invalid(
        "[[namespaces]]\npattern = \"chat:*\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n",
    );
    assert!(
        wildcard.starts_with("topic policy: namespace \"chat:*\": "),
        "{wildcard}"
    );
    let placeholder = invalid(
        "[[namespaces]]\npattern = \"user:{id}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
    );
    assert!(
        placeholder.contains("unknown placeholder `{id}`"),
        "{placeholder}"
    );
    let shadowed = invalid(
        "[[namespaces]]\npattern = \"x:{sub}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n\
             [[namespaces]]\npattern = \"x:{role}\"\nsubscribe = \"owner\"\npublish = \"nobody\"\n",
    );
    assert!(
        shadowed.contains("namespace \"x:{role}\" never applies"),
        "{shadowed}"
    );
    let empty_roles = invalid(
        "[[namespaces]]\npattern = \"ops\"\nsubscribe = { roles = [] }\npublish = \"nobody\"\n",
    );
    assert!(empty_roles.contains("empty role list"), "{empty_roles}");
    let default_owner =
        invalid("[default_namespace]\nsubscribe = \"owner\"\npublish = \"nobody\"\n");
    assert!(
        default_owner.starts_with("topic policy: default namespace: "),
        "{default_owner}"
    );
}

#[test]
fn history_is_per_namespace_and_off_by_default() {
    let s = from_toml("").unwrap();
    assert!(!s.engine.topic_policy.has_history());
    let s = from_toml(
        r#"
[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"
history_size = 100
history_ttl = "10m"

[[namespaces]]
pattern = "ops"
subscribe = "authenticated"
publish = "nobody"

[default_namespace]
subscribe = "authenticated"
publish = "nobody"
history_size = 5
history_ttl = "2h"
"#,
    )
    .unwrap();
    let policy = &s.engine.topic_policy;
    let chat = HistoryLimits::new(100, Duration::from_secs(600)).unwrap();
    assert_eq!(policy.history_for("chat:lobby"), Some(chat));
    assert_eq!(
        policy.history_for("ops:alerts"),
        None,
        "not configured: off"
    );
    assert_eq!(
        policy.history_for("news"),
        Some(HistoryLimits::new(5, Duration::from_secs(7200)).unwrap()),
        "topics no namespace covers follow the default namespace"
    );
}

#[test]
fn invalid_history_names_the_namespace() {
    let entry = |extra: &str| {
        format!(
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n{extra}"
        )
    };
    assert_eq!(
        invalid(&entry("history_size = 0\nhistory_ttl = \"1m\"\n")),
        "topic policy: namespace \"chat\": history_size must be between 1 and 100000, not 0"
    );
    assert_eq!(
        invalid(&entry("history_size = 100001\nhistory_ttl = \"1m\"\n")),
        "topic policy: namespace \"chat\": history_size must be between 1 and 100000, not 100001"
    );
    for ttl in ["0s", "500ms", "31days"] {
        let message = invalid(&entry(&format!(
            "history_size = 10\nhistory_ttl = \"{ttl}\"\n"
        )));
        assert_eq!(
            message, "topic policy: namespace \"chat\": history_ttl must be between 1s and 30 days",
            "{ttl}"
        );
    }
    for half in ["history_size = 10\n", "history_ttl = \"1m\"\n"] {
        assert_eq!(
            invalid(&entry(half)),
            "topic policy: namespace \"chat\": history_size and history_ttl must be set together",
            "{half}"
        );
    }
    let default = invalid(
        "[default_namespace]\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nhistory_size = 3\n",
    );
    assert_eq!(
        default,
        "topic policy: default namespace: history_size and history_ttl must be set together"
    );
    // The limits themselves: the edges are accepted.
    let s = from_toml(&entry("history_size = 100000\nhistory_ttl = \"30days\"\n")).unwrap();
    assert!(s.engine.topic_policy.has_history());
    let s = from_toml(&entry("history_size = 1\nhistory_ttl = \"1s\"\n")).unwrap();
    assert!(s.engine.topic_policy.has_history());
    for text in [
            entry("history_size = -1\nhistory_ttl = \"1m\"\n"),
            entry("history_size = 10\nhistory_ttl = \"soon\"\n"),
            entry("history_size = \"10\"\nhistory_ttl = \"1m\"\n"),
            entry("history = 10\n"),
            "[default_namespace]\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nhistory_len = 3\n"
                .into(),
        ] {
            assert!(
                matches!(from_toml(&text), Err(ConfigError::ParseFile { .. })),
                "{text}"
            );
        }
}

#[test]
fn presence_is_per_namespace_and_off_by_default() {
    use realtime_core::PresenceMode;
    let s = from_toml("").unwrap();
    assert!(!s.engine.topic_policy.has_presence());
    assert!(!s.engine.presence.events, "no webhook, no events");
    let s = from_toml(
        r#"
[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"
presence = true
join_leave = true

[[namespaces]]
pattern = "doc"
subscribe = "authenticated"
publish = "nobody"
presence = true

[[namespaces]]
pattern = "ops"
subscribe = "authenticated"
publish = "nobody"
presence = false

[default_namespace]
subscribe = "authenticated"
publish = "nobody"
presence = true
"#,
    )
    .unwrap();
    let policy = &s.engine.topic_policy;
    assert_eq!(
        policy.presence_for("chat:lobby"),
        Some(PresenceMode { join_leave: true })
    );
    assert_eq!(
        policy.presence_for("doc:1"),
        Some(PresenceMode { join_leave: false })
    );
    assert_eq!(policy.presence_for("ops:alerts"), None);
    assert_eq!(
        policy.presence_for("news"),
        Some(PresenceMode { join_leave: false }),
        "topics no namespace covers follow the default namespace"
    );
}

#[test]
fn join_leave_without_presence_names_the_namespace() {
    assert_eq!(
        invalid(
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\njoin_leave = true\n"
        ),
        "topic policy: namespace \"chat\": join_leave = true needs presence = true"
    );
    assert_eq!(
        invalid(
            "[default_namespace]\nsubscribe = \"authenticated\"\npublish = \"nobody\"\npresence = false\njoin_leave = true\n"
        ),
        "topic policy: default namespace: join_leave = true needs presence = true"
    );
    assert!(matches!(
        from_toml(
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\npresence = \"yes\"\n"
        ),
        Err(ConfigError::ParseFile { .. })
    ));
}

#[test]
fn a_webhook_url_turns_presence_events_on() {
    let s = from_toml(
            "webhook_url = \"https://hooks.example/rt\"\nwebhook_secret = \"0123456789abcdef\"\n\
             webhook_queue_size = 7\npresence_node_timeout = \"30s\"\npresence_offline_grace = \"1s\"\n",
        )
        .unwrap();
    assert!(s.engine.presence.events);
    assert_eq!(s.engine.presence.event_queue, 7);
    assert_eq!(s.engine.presence.lease.bound(), Duration::from_secs(30));
    assert_eq!(s.engine.presence.offline_grace, Duration::from_secs(1));
    let endpoint = s.webhook.endpoint.unwrap();
    assert_eq!(endpoint.url, "https://hooks.example/rt");
    assert_eq!(
        invalid("webhook_url = \"https://hooks.example\"\nwebhook_secret = \"short\"\n"),
        "REALTIME_WEBHOOK_SECRET must be at least 16 bytes, not 5"
    );
    assert!(invalid("presence_node_timeout = \"1s\"\n").contains("between 3s and 1h"));
    // Neither the secret nor credentials in the URL are shown.
    let s = from_toml(
            "webhook_url = \"https://user:pw@hooks.example/rt\"\nwebhook_secret = \"0123456789abcdef\"\n",
        )
        .unwrap();
    let shown = s.effective();
    assert_eq!(
        shown["webhooks"]["url"], "https://<set>@hooks.example/rt",
        "{shown}"
    );
    assert_eq!(shown["webhooks"]["secret"], "<set>");
    assert!(!shown.to_string().contains("0123456789abcdef"));
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
}

#[test]
fn the_proxy_table_and_namespaces_name_the_hooks() {
    use realtime_core::ProxyUse;
    let s = from_toml(
        r#"
[proxy]
subscribe_proxy_url = "http://127.0.0.1:9/subscribe"
publish_proxy_url = "https://user:pw@backend.example/publish"
proxy_secret = "0123456789abcdef"
proxy_timeout = "300ms"

[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"
subscribe_proxy = true
publish_proxy = true

[[namespaces]]
pattern = "news"
subscribe = "authenticated"
publish = "nobody"
"#,
    )
    .unwrap();
    let policy = &s.engine.topic_policy;
    assert_eq!(
        policy.proxy_for("chat:1"),
        ProxyUse {
            subscribe: true,
            publish: true
        }
    );
    assert_eq!(policy.proxy_for("news"), ProxyUse::default());
    assert_eq!(s.proxy.timeout, Duration::from_millis(300));
    assert!(s.proxy.connect_url.is_none());
    let shown = s.effective();
    assert_eq!(
        shown["proxy"]["publish_url"],
        "https://<set>@backend.example/publish"
    );
    assert_eq!(shown["proxy"]["secret"], "<set>");
    assert_eq!(shown["engine"]["namespaces"][0]["subscribe_proxy"], true);
    assert!(!shown.to_string().contains("0123456789abcdef"));
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
    // A namespace naming a hook whose URL is not set.
    for (key, option) in [
        ("subscribe_proxy", "REALTIME_SUBSCRIBE_PROXY_URL"),
        ("publish_proxy", "REALTIME_PUBLISH_PROXY_URL"),
    ] {
        assert_eq!(
            invalid(&format!(
                "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\n{key} = true\n"
            )),
            format!("topic policy: namespace \"chat\": {key} = true needs {option}")
        );
    }
    // Proxy keys belong in [proxy], not at the top level.
    assert!(matches!(
        from_toml("connect_proxy_url = \"http://127.0.0.1:9/\"\n"),
        Err(ConfigError::ParseFile { .. })
    ));
    assert!(matches!(
        from_toml("[proxy]\nconnect_url = \"http://127.0.0.1:9/\"\n"),
        Err(ConfigError::ParseFile { .. })
    ));
}

#[test]
fn malformed_namespace_entries_are_parse_errors() {
    for text in [
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"everyone\"\npublish = \"nobody\"\n",
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\n",
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nowner = true\n",
        "[default_namespace]\nsubscribe = \"authenticated\"\n",
    ] {
        assert!(
            matches!(from_toml(text), Err(ConfigError::ParseFile { .. })),
            "{text}"
        );
    }
    let Err(ConfigError::ParseFile { source, .. }) = from_toml(
        "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"everyone\"\npublish = \"nobody\"\n",
    ) else {
        unreachable!()
    };
    assert!(
        source.to_string().contains("unknown access \"everyone\""),
        "{source}"
    );
}

#[test]
fn namespaces_are_not_command_line_options() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let o = Cli::try_parse_from(["realtime-server"]).unwrap().options;
    assert_eq!((o.namespaces, o.default_namespace), (None, None));
    assert!(Cli::try_parse_from(["realtime-server", "--namespaces", "chat"]).is_err());
}

#[test]
fn the_option_table_is_the_command_line() {
    use clap::CommandFactory;
    let command = Cli::command();
    let arguments: Vec<(String, Option<String>)> = command
        .get_arguments()
        .filter(|a| !["check_config", "help", "version"].contains(&a.get_id().as_str()))
        .map(|a| {
            (
                format!("--{}", a.get_long().unwrap()),
                a.get_env().map(|e| e.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let table: Vec<(String, Option<String>)> = OPTIONS
        .iter()
        .filter_map(|o| Some((o.flag()?, o.env.map(str::to_owned))))
        .collect();
    assert_eq!(arguments, table);
    for option in OPTIONS {
        if let Some(env) = option.env {
            assert_eq!(
                env,
                format!("REALTIME_{}", option.name.to_ascii_uppercase())
            );
        }
    }
}

#[test]
fn any_key_material_leaves_development_mode() {
    // An API key alone: development mode would hand out a different one.
    let o = Options {
        api_key: Some("k".into()),
        ..Default::default()
    };
    let message = match o.resolve(generated) {
        Err(ConfigError::Invalid(m)) => m,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(message.contains("REALTIME_API_KEY is"), "{message}");
    assert!(message.contains("REALTIME_JWT_SECRET"), "{message}");
    // A previous secret alone, even an empty one.
    for previous in ["old", ""] {
        let o = Options {
            jwt_previous_secret: Some(previous.into()),
            ..Default::default()
        };
        assert!(o.resolve(generated).is_err(), "{previous:?}");
    }
    // A JWKS file alone needs its API key, like any production key.
    let o = Options {
        jwt_jwks_file: Some("keys.json".into()),
        ..Default::default()
    };
    assert!(o.resolve(generated).is_err());
}

#[test]
fn development_mode_stays_on_loopback_unless_allowed() {
    let remote = || Options {
        listen: Some("0.0.0.0:8080".parse().unwrap()),
        ..Default::default()
    };
    let Err(ConfigError::Invalid(message)) = remote().resolve(generated) else {
        panic!("development mode on 0.0.0.0 must be refused");
    };
    assert!(
        message.contains("REALTIME_ALLOW_REMOTE_DEVELOPMENT"),
        "{message}"
    );
    let allowed = Options {
        allow_remote_development: Some(true),
        ..remote()
    };
    assert!(allowed.resolve(generated).unwrap().development);
    let v6 = Options {
        listen: Some("[::1]:8080".parse().unwrap()),
        ..Default::default()
    };
    assert!(v6.resolve(generated).unwrap().development);
    let production = Options {
        jwt_secret: Some("s".into()),
        api_key: Some("k".into()),
        ..remote()
    };
    assert!(!production.resolve(generated).unwrap().development);
}

#[test]
fn http_limits_and_write_timeout_must_be_usable() {
    let s = Options::default().resolve(generated).unwrap();
    assert_eq!(s.http, crate::limits::HttpLimits::default());
    for text in [
        "header_read_timeout = \"0s\"",
        "keep_alive_timeout = \"0s\"",
        "upgrade_timeout = \"0s\"",
        "request_timeout = \"0s\"",
        "write_timeout = \"0s\"",
        "max_connections = 0",
    ] {
        let message = invalid(text);
        assert!(
            message.contains("above zero") || message.contains("at least 1"),
            "{text}: {message}"
        );
    }
    let s =
        from_toml("header_read_timeout = \"2s\"\nmax_connections = 3\nwrite_timeout = \"1s\"\n")
            .unwrap();
    assert_eq!(s.http.header_read_timeout, Duration::from_secs(2));
    assert_eq!(s.http.max_connections, 3);
    assert_eq!(s.engine.write_timeout, Duration::from_secs(1));
}

#[test]
fn namespaces_come_from_the_file() {
    let dir = std::env::temp_dir().join(format!("rt-namespaces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("realtime.toml");
    std::fs::write(
            &path,
            "[[namespaces]]\npattern = \"chat\"\nsubscribe = \"authenticated\"\npublish = \"authenticated\"\n",
        )
        .unwrap();
    let o = Options {
        config: Some(path),
        ..Default::default()
    };
    let s = o.merge_file().unwrap().resolve(generated).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(s.engine.topic_policy.namespaces.len(), 1);
    assert_eq!(
        s.engine.topic_policy.namespaces[0].rules().publish,
        Access::Authenticated
    );
}
