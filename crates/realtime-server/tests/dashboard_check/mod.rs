//! Checks that the Grafana dashboard (deploy/grafana/boundary-realtime.json), the
//! `/metrics` a server exports and the metric tables of docs/OPERATIONS.md name
//! the same metrics. Each check returns the problems it finds rather than
//! asserting, so a test can also prove that a drifted name is reported.
#![allow(dead_code)]

pub mod exposition;
pub mod grafana;
pub mod operations_doc;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use exposition::{Exposition, sample_suffixes};
use operations_doc::Row;

pub const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/boundary-realtime.json"
);
pub const OPERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/OPERATIONS.md");

/// Labels Prometheus adds to every series when it scrapes a target.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
/// Functions over a counter's (or a histogram sample's) range.
const COUNTER_FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];
/// Grafana's data source variable every panel must use.
const DATASOURCE: &str = "${datasource}";

pub fn dashboard_text() -> String {
    std::fs::read_to_string(DASHBOARD).expect("deploy/grafana/boundary-realtime.json is readable")
}

pub fn operations_text() -> String {
    std::fs::read_to_string(OPERATIONS).expect("docs/OPERATIONS.md is readable")
}

pub fn parse_dashboard(text: &str) -> Value {
    serde_json::from_str(text).expect("the dashboard is JSON")
}

/// The name a family is queried (and documented) by: a counter's `_total`
/// sample, otherwise the family's own name (a histogram's `_bucket`, `_sum`
/// and `_count` samples are documented under it).
pub fn documented_name(family: &str, kind: &str) -> String {
    match kind {
        "counter" => format!("{family}_total"),
        _ => family.to_owned(),
    }
}

/// The sample names a documented row stands for.
fn documented_samples(row: &Row) -> Vec<String> {
    let family = match row.kind.as_str() {
        "counter" => row.metric.strip_suffix("_total").unwrap_or(&row.metric),
        _ => &row.metric,
    };
    sample_suffixes(&row.kind)
        .iter()
        .map(|s| format!("{family}{s}"))
        .collect()
}

/// Every query parses as PromQL and selects only samples the server exports,
/// by labels they carry (or Prometheus adds); counter and histogram samples only
/// inside `rate`/`irate`/`increase`, and those only over such samples.
pub fn dashboard_against_exports(dashboard: &Value, exported: &Exposition) -> Vec<String> {
    let mut problems = Vec::new();
    let queries = grafana::queries(dashboard);
    if queries.is_empty() {
        problems.push("the dashboard has no queries".to_owned());
    }
    for query in queries {
        let place = &query.place;
        let selection = match grafana::select(&query.promql) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{place}: not PromQL ({e}): {}", query.text));
                continue;
            }
        };
        if selection.selectors.is_empty() {
            problems.push(format!("{place}: selects no metric: {}", query.text));
        }
        for selector in &selection.selectors {
            let Some(metric) = &selector.metric else {
                problems.push(format!(
                    "{place}: a selector names no metric: {}",
                    query.text
                ));
                continue;
            };
            let Some((family, f)) = exported.family_of(metric) else {
                let hint = match exported.families.get(metric.as_str()) {
                    Some(f) => format!(" (a {} is queried by its samples)", f.kind),
                    None => String::new(),
                };
                problems.push(format!(
                    "{place}: `{metric}` is not a sample the server exports{hint}"
                ));
                continue;
            };
            for label in &selector.matched {
                if !TARGET_LABELS.contains(&label.as_str()) && !f.labels.contains(label) {
                    problems.push(format!(
                        "{place}: `{metric}` has no label `{label}` (it has {:?})",
                        f.labels
                    ));
                }
            }
            let cumulative = matches!(f.kind.as_str(), "counter" | "histogram");
            let in_rate = selector
                .ranged_in
                .as_deref()
                .is_some_and(|c| COUNTER_FUNCTIONS.contains(&c));
            if cumulative && !in_rate {
                problems.push(format!(
                    "{place}: `{metric}` is a sample of the {} `{family}`: query it through rate() or increase()",
                    f.kind
                ));
            }
            if in_rate && !cumulative {
                problems.push(format!(
                    "{place}: rate()/increase() over `{metric}`, a {}",
                    f.kind
                ));
            }
        }
        for grouping in &selection.groupings {
            let families: Option<Vec<_>> = grouping
                .metrics
                .iter()
                .map(|m| exported.family_of(m))
                .collect();
            // A metric that is not exported was reported above.
            let Some(families) = families else { continue };
            let carried: BTreeSet<&String> = families.iter().flat_map(|(_, f)| &f.labels).collect();
            for label in &grouping.labels {
                if !TARGET_LABELS.contains(&label.as_str()) && !carried.contains(label) {
                    problems.push(format!(
                        "{place}: groups by `{label}`, a label none of {:?} has",
                        grouping.metrics
                    ));
                }
            }
        }
    }
    problems
}

/// Every exported family has exactly one row, under the name it is queried by,
/// with its type, naming each of its labels; every row is an exported family;
/// every sample belongs to a `# TYPE`d family.
pub fn docs_against_exports(rows: &[Row], exported: &Exposition) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_name: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in rows {
        if let Some(earlier) = by_name.insert(&row.metric, row) {
            problems.push(format!(
                "docs/OPERATIONS.md:{}: `{}` already has a row at line {}",
                row.line, row.metric, earlier.line
            ));
        }
    }
    for orphan in &exported.orphans {
        problems.push(format!(
            "/metrics: a sample of no `# TYPE`d family: {orphan}"
        ));
    }
    let mut expected = BTreeSet::new();
    for (family, f) in &exported.families {
        let name = documented_name(family, &f.kind);
        let Some(row) = by_name.get(name.as_str()) else {
            problems.push(format!(
                "`{name}` ({}) is exported but has no row in docs/OPERATIONS.md's metric tables",
                f.kind
            ));
            expected.insert(name);
            continue;
        };
        if row.kind != f.kind {
            problems.push(format!(
                "docs/OPERATIONS.md:{}: `{name}` is documented as a {}, but the server exports a {}",
                row.line, row.kind, f.kind
            ));
        }
        for label in f.labels.iter().filter(|l| *l != "le") {
            if !row.mentioned.contains(label) {
                problems.push(format!(
                    "docs/OPERATIONS.md:{}: `{name}` has a label `{label}` its row does not name",
                    row.line
                ));
            }
        }
        expected.insert(name);
    }
    for row in rows {
        if !expected.contains(&row.metric) {
            problems.push(format!(
                "docs/OPERATIONS.md:{}: `{}` is documented but the server does not export it",
                row.line, row.metric
            ));
        }
    }
    problems
}

/// Every documented metric is queried somewhere on the dashboard (a histogram
/// by any of its samples), so none is forgotten there.
pub fn docs_against_dashboard(rows: &[Row], dashboard: &Value) -> Vec<String> {
    let queried: BTreeSet<String> = grafana::queries(dashboard)
        .iter()
        .filter_map(|q| grafana::select(&q.promql).ok())
        .flat_map(|s| s.selectors)
        .filter_map(|s| s.metric)
        .collect();
    let mut problems = Vec::new();
    if rows.is_empty() {
        problems.push("docs/OPERATIONS.md documents no metric".to_owned());
    }
    for row in rows {
        if !documented_samples(row).iter().any(|s| queried.contains(s)) {
            problems.push(format!(
                "docs/OPERATIONS.md:{}: `{}` is documented but no dashboard panel queries it",
                row.line, row.metric
            ));
        }
    }
    problems
}

/// What Grafana needs to import the dashboard and what keeps it usable: a
/// Prometheus data source variable every panel and target uses, a node
/// variable, unique panel ids and titles, panels inside the 24-column grid
/// without overlapping, every panel with a description and at least one target.
pub fn dashboard_structure(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    need(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        format!(
            "schemaVersion {} (want 36 or later)",
            dashboard["schemaVersion"]
        ),
    );
    for key in ["uid", "title"] {
        need(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            format!("no {key}"),
        );
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    let datasource = variable("datasource").unwrap_or_default();
    need(
        datasource["type"] == "datasource" && datasource["query"] == "prometheus",
        format!("no Prometheus data source variable `datasource`: {datasource}"),
    );
    let instance = variable("instance").unwrap_or_default();
    need(
        instance["type"] == "query" && instance["datasource"]["uid"] == DATASOURCE,
        format!("no node variable `instance` over ${{datasource}}: {instance}"),
    );

    let panels = grafana::panels(dashboard);
    need(!panels.is_empty(), "no panels".to_owned());
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut cells: Vec<(String, [u64; 4])> = Vec::new();
    for panel in &panels {
        let name = format!(
            "panel {} {:?}",
            panel["id"],
            panel["title"].as_str().unwrap_or_default()
        );
        need(
            panel["id"].as_u64().is_some_and(|id| ids.insert(id)),
            format!("{name}: an id that is missing or not unique"),
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap_or(u64::MAX));
        need(
            w >= 1 && h >= 1 && x.saturating_add(w) <= 24 && y != u64::MAX,
            format!("{name}: gridPos {grid} is outside the 24-column grid"),
        );
        let (right, bottom) = (x.saturating_add(w), y.saturating_add(h));
        for (other, [ox, oy, oright, obottom]) in &cells {
            let apart = right <= *ox || *oright <= x || bottom <= *oy || *obottom <= y;
            need(apart, format!("{name} overlaps {other}"));
        }
        cells.push((name.clone(), [x, y, right, bottom]));
        if panel["type"] == "row" {
            continue;
        }
        need(
            panel["title"]
                .as_str()
                .is_some_and(|t| titles.insert(t.to_owned())),
            format!("{name}: a title that is missing or not unique"),
        );
        need(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            format!("{name}: no description"),
        );
        need(
            panel["datasource"]["uid"] == DATASOURCE,
            format!("{name}: its datasource is not {DATASOURCE}"),
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        need(!targets.is_empty(), format!("{name}: no targets"));
        let mut refs = BTreeSet::new();
        for target in &targets {
            need(
                target["refId"]
                    .as_str()
                    .is_some_and(|r| refs.insert(r.to_owned())),
                format!("{name}: a target whose refId is missing or not unique"),
            );
            need(
                target["datasource"].is_null() || target["datasource"]["uid"] == DATASOURCE,
                format!("{name}: a target whose datasource is not {DATASOURCE}"),
            );
        }
    }
    problems
}
