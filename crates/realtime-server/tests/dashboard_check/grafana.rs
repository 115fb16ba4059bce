//! The queries of a Grafana dashboard JSON (every panel target's `expr`, rows'
//! nested panels included, and every query variable), Grafana's variables
//! replaced so each is plain PromQL, and what each one selects, read from the
//! PromQL syntax tree (promql-parser), not from the text.

use promql_parser::label::Matchers;
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use serde_json::Value;

/// Grafana's variables the dashboard may use, and a value that keeps the
/// query valid PromQL.
const VARIABLES: [(&str, &str); 6] = [
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${__interval}", "1m"),
    ("$__interval", "1m"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

/// One query and where it sits, e.g. `panel 7 "Slow consumers" target A`.
#[derive(Debug, Clone)]
pub struct Query {
    pub place: String,
    /// As written in the dashboard.
    pub text: String,
    /// What PromQL to parse: the variables replaced, `label_values(q, l)` → `q`.
    pub promql: String,
}

/// Every panel of the dashboard, rows' nested panels included (rows too).
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every query of the dashboard: panel targets, then query variables.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let text = target["expr"].as_str().unwrap_or_default().to_owned();
            out.push(Query {
                place: format!(
                    "panel {} {:?} target {}",
                    panel["id"],
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                promql: substitute(&text),
                text,
            });
        }
    }
    let variables = dashboard["templating"]["list"].as_array();
    for variable in variables.into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = &variable["query"];
        let text = query["query"]
            .as_str()
            .or(query.as_str())
            .unwrap_or_default();
        let inner = text
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map_or(text, |(metric, _label)| metric);
        out.push(Query {
            place: format!(
                "variable {:?}",
                variable["name"].as_str().unwrap_or_default()
            ),
            text: text.to_owned(),
            promql: substitute(inner),
        });
    }
    out
}

fn substitute(text: &str) -> String {
    VARIABLES
        .iter()
        .fold(text.to_owned(), |q, (var, value)| q.replace(var, value))
}

/// One series selector of a query.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The metric (sample) name, `None` for a selector that names none.
    pub metric: Option<String>,
    /// Label names of its matchers.
    pub matched: Vec<String>,
    /// For a range selector (`m[5m]`), the function it is an argument of
    /// (`rate`, …; empty outside a call); `None` for an instant selector.
    pub ranged_in: Option<String>,
}

/// An aggregation's `by (…)` labels and the sample names it aggregates.
#[derive(Debug, Clone)]
pub struct Grouping {
    pub labels: Vec<String>,
    pub metrics: Vec<String>,
}

/// What one query selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub selectors: Vec<Selector>,
    pub groupings: Vec<Grouping>,
}

/// Parses `promql` and collects its selectors and groupings.
pub fn select(promql: &str) -> Result<Selection, String> {
    if promql.trim().is_empty() {
        return Err("empty query".into());
    }
    if promql.contains('$') {
        return Err("a Grafana variable the check does not know".into());
    }
    let expr = parser::parse(promql)?;
    let mut out = Selection::default();
    walk(&expr, None, &mut out);
    Ok(out)
}

fn walk(expr: &Expr, call: Option<&str>, out: &mut Selection) {
    match expr {
        Expr::Aggregate(a) => {
            let mut inner = Selection::default();
            walk(&a.expr, None, &mut inner);
            if let Some(param) = &a.param {
                walk(param, None, &mut inner);
            }
            if let Some(LabelModifier::Include(labels)) = &a.modifier {
                out.groupings.push(Grouping {
                    labels: labels.labels.clone(),
                    metrics: inner
                        .selectors
                        .iter()
                        .filter_map(|s| s.metric.clone())
                        .collect(),
                });
            }
            out.selectors.extend(inner.selectors);
            out.groupings.extend(inner.groupings);
        }
        Expr::Unary(u) => walk(&u.expr, None, out),
        Expr::Binary(b) => {
            walk(&b.lhs, None, out);
            walk(&b.rhs, None, out);
        }
        Expr::Paren(p) => walk(&p.expr, None, out),
        Expr::Subquery(s) => walk(&s.expr, None, out),
        Expr::VectorSelector(vs) => out.selectors.push(selector(vs, None)),
        Expr::MatrixSelector(ms) => out
            .selectors
            .push(selector(&ms.vs, Some(call.unwrap_or_default()))),
        Expr::Call(c) => {
            for arg in &c.args.args {
                walk(arg, Some(c.func.name), out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(vs: &VectorSelector, ranged_in: Option<&str>) -> Selector {
    let Matchers {
        matchers,
        or_matchers,
    } = &vs.matchers;
    Selector {
        metric: vs.name.clone(),
        matched: matchers
            .iter()
            .chain(or_matchers.iter().flatten())
            .map(|m| m.name.clone())
            .collect(),
        ranged_in: ranged_in.map(str::to_owned),
    }
}
