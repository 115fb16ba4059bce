//! The Grafana dashboard (deploy/grafana/boundary-realtime.json) against the real
//! binary and docs/OPERATIONS.md: a node with every optional metric family on
//! (the `redis` provider over a real `redis-server`, history and presence
//! namespaces, `webhook_url` and the proxy URLs pointed at a real HTTP receiver)
//! is scraped; every dashboard query must parse as PromQL and select only what it
//! exports, every exported family must have a row in OPERATIONS.md, and every
//! documented metric must be on the dashboard.

mod binary;
mod common;
mod dashboard_check;
mod processes;
mod webhook_receiver;

use std::time::Duration;

use binary::Running;
use dashboard_check::exposition::Exposition;
use dashboard_check::{
    dashboard_against_exports, dashboard_structure, dashboard_text, docs_against_dashboard,
    docs_against_exports, operations_doc, operations_text, parse_dashboard,
};
use processes::{ConfigFile, RedisServer};
use webhook_receiver::Receiver;

const HOOK_SECRET: &str = "dashboard-test-hook-secret-0123";
/// Upper bound for one scrape.
const SCRAPE: Duration = Duration::from_secs(10);

/// Namespaces that keep history and presence and consult the proxies.
const CONFIG: &str = r#"
[[namespaces]]
pattern = "chat"
subscribe = "authenticated"
publish = "authenticated"
history_size = 100
history_ttl = "10m"
presence = true
join_leave = true
subscribe_proxy = true
publish_proxy = true
"#;

/// What a node with every optional metric family exports, and the processes
/// behind it (dropped with it).
struct Scraped {
    text: String,
    _node: Running,
    _backend: Receiver,
    _redis: RedisServer,
    _config: ConfigFile,
}

async fn scrape_full_node() -> Scraped {
    let redis = RedisServer::start().await;
    let backend = Receiver::start(HOOK_SECRET).await;
    let config = ConfigFile::write(CONFIG);
    let (webhook, connect, subscribe, publish) = (
        backend.url(),
        backend.url_at("/proxy/connect"),
        backend.url_at("/proxy/subscribe"),
        backend.url_at("/proxy/publish"),
    );
    let redis_url = redis.url();
    let node = binary::start(
        &[
            ("REALTIME_LISTEN", "127.0.0.1:0"),
            ("REALTIME_JWT_SECRET", common::SECRET),
            ("REALTIME_API_KEY", common::API_KEY),
            ("REALTIME_PROVIDER", "redis"),
            ("REALTIME_REDIS_URL", &redis_url),
            ("REALTIME_NODE_ID", "dash"),
            ("REALTIME_CONFIG", config.path()),
            ("REALTIME_WEBHOOK_URL", &webhook),
            ("REALTIME_WEBHOOK_SECRET", HOOK_SECRET),
            ("REALTIME_CONNECT_PROXY_URL", &connect),
            ("REALTIME_SUBSCRIBE_PROXY_URL", &subscribe),
            ("REALTIME_PUBLISH_PROXY_URL", &publish),
            ("REALTIME_PROXY_SECRET", HOOK_SECRET),
        ],
        &[],
    )
    .await
    .listening();
    let response = tokio::time::timeout(SCRAPE, reqwest::get(node.url("/metrics")))
        .await
        .expect("/metrics answers in time")
        .expect("/metrics answers");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("/metrics body");
    Scraped {
        text,
        _node: node,
        _backend: backend,
        _redis: redis,
        _config: config,
    }
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[tokio::test]
async fn every_dashboard_query_selects_exported_metrics_and_labels() {
    let scraped = scrape_full_node().await;
    let exported = Exposition::parse(&scraped.text);
    let dashboard = parse_dashboard(&dashboard_text());
    assert_none(
        "dashboard queries against the node's /metrics",
        &dashboard_against_exports(&dashboard, &exported),
    );
}

#[tokio::test]
async fn every_exported_metric_has_its_row_in_operations_md() {
    let scraped = scrape_full_node().await;
    let exported = Exposition::parse(&scraped.text);
    // The families this node must export for the check to mean anything: one of
    // each optional part that was switched on.
    for family in [
        "realtime_connections",
        "realtime_disconnects",
        "realtime_bus_link_up",
        "realtime_history_appends",
        "realtime_presence_redis_errors",
        "realtime_webhook_delivery_seconds",
        "realtime_proxy_requests",
        "realtime_proxy_request_seconds",
        "realtime_connections_by_transport",
    ] {
        assert!(
            exported.families.contains_key(family),
            "the node exports no `{family}`; it exports {:?}",
            exported.families.keys()
        );
    }
    let rows = operations_doc::rows(&operations_text());
    assert_none(
        "docs/OPERATIONS.md against the node's /metrics",
        &docs_against_exports(&rows, &exported),
    );
}

#[test]
fn every_documented_metric_is_on_the_dashboard() {
    let rows = operations_doc::rows(&operations_text());
    let dashboard = parse_dashboard(&dashboard_text());
    assert_none(
        "docs/OPERATIONS.md against the dashboard",
        &docs_against_dashboard(&rows, &dashboard),
    );
}

#[test]
fn the_dashboard_is_importable_with_a_prometheus_data_source() {
    let dashboard = parse_dashboard(&dashboard_text());
    assert_none("dashboard structure", &dashboard_structure(&dashboard));
}

/// The checks above can fail: a metric renamed on any one side (the dashboard,
/// the server, the docs), a label renamed, a counter queried without rate(), a
/// row with the wrong type, are each reported by name.
#[tokio::test]
async fn a_drifted_name_on_any_side_is_reported() {
    let scraped = scrape_full_node().await;
    let exported = Exposition::parse(&scraped.text);
    let dashboard = dashboard_text();
    let docs = operations_text();
    let rows = operations_doc::rows(&docs);
    let reports = |problems: Vec<String>, needle: &str| {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle:?}: {problems:#?}"
        );
    };

    // The dashboard queries a name the server does not export.
    let renamed = parse_dashboard(&dashboard.replace("realtime_bus_link_up", "realtime_bus_up"));
    reports(
        dashboard_against_exports(&renamed, &exported),
        "`realtime_bus_up` is not a sample the server exports",
    );
    // A counter by its family name (no `_total`), and without rate().
    let bare = parse_dashboard(&dashboard.replace(
        "rate(realtime_messages_total{instance=~\\\"$instance\\\"}[$__rate_interval])",
        "realtime_messages{instance=~\\\"$instance\\\"}",
    ));
    reports(
        dashboard_against_exports(&bare, &exported),
        "`realtime_messages` is not a sample the server exports (a counter",
    );
    let unrated = parse_dashboard(&dashboard.replace(
        "rate(realtime_messages_total{instance=~\\\"$instance\\\"}[$__rate_interval])",
        "realtime_messages_total{instance=~\\\"$instance\\\"}",
    ));
    reports(
        dashboard_against_exports(&unrated, &exported),
        "query it through rate() or increase()",
    );
    // A label the metric does not have, in a matcher and in a grouping.
    let matcher = parse_dashboard(&dashboard.replace(
        "reason=\\\"slow_consumer\\\"",
        "cause=\\\"slow_consumer\\\"",
    ));
    reports(
        dashboard_against_exports(&matcher, &exported),
        "`realtime_disconnects_total` has no label `cause`",
    );
    let grouping = parse_dashboard(&dashboard.replace("sum by (route)", "sum by (path)"));
    reports(
        dashboard_against_exports(&grouping, &exported),
        "groups by `path`",
    );

    // The server renames a family: the docs and the dashboard both lag behind.
    let drifted = Exposition::parse(
        &scraped
            .text
            .replace("realtime_history_reads", "realtime_history_read_ops"),
    );
    reports(
        docs_against_exports(&rows, &drifted),
        "`realtime_history_read_ops_total` (counter) is exported but has no row",
    );
    reports(
        docs_against_exports(&rows, &drifted),
        "`realtime_history_reads_total` is documented but the server does not export it",
    );
    reports(
        dashboard_against_exports(&parse_dashboard(&dashboard), &drifted),
        "`realtime_history_reads_total` is not a sample the server exports",
    );

    // The docs lose a row, or give the wrong type.
    let without: Vec<_> = rows
        .iter()
        .filter(|r| r.metric != "realtime_bus_reconnects_total")
        .cloned()
        .collect();
    reports(
        docs_against_exports(&without, &exported),
        "`realtime_bus_reconnects_total` (counter) is exported but has no row",
    );
    let mistyped = operations_doc::rows(&docs.replace(
        "| `realtime_webhook_in_flight` | gauge |",
        "| `realtime_webhook_in_flight` | counter |",
    ));
    reports(
        docs_against_exports(&mistyped, &exported),
        "`realtime_webhook_in_flight` is documented as a counter, but the server exports a gauge",
    );

    // A documented metric no panel shows.
    let forgotten = parse_dashboard(&dashboard.replace(
        "realtime_presence_reaped_nodes_total",
        "realtime_presence_reaped_members_total",
    ));
    reports(
        docs_against_dashboard(&rows, &forgotten),
        "`realtime_presence_reaped_nodes_total` is documented but no dashboard panel queries it",
    );
}
