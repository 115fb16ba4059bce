//! The metric rows of docs/OPERATIONS.md's "Health and metrics" tables: each
//! row's metric (as it is queried: a counter with `_total`), its type, and the
//! names written in backticks in its labels column.

use std::collections::BTreeSet;

/// The section whose tables list the metrics.
const SECTION: &str = "## Health and metrics";

/// One `| \`metric\` | type | labels |` row.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub kind: String,
    /// Every `` `word` `` of the labels column (label names among them).
    pub mentioned: BTreeSet<String>,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// Every metric row of the section, in file order. Panics if the section is
/// missing: a renamed heading must not make the check vacuous.
pub fn rows(markdown: &str) -> Vec<Row> {
    let lines: Vec<&str> = markdown.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == SECTION)
        .unwrap_or_else(|| panic!("docs/OPERATIONS.md has no {SECTION:?} section"));
    lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .take_while(|(_, l)| !l.starts_with("## "))
        .filter(|(_, l)| l.starts_with("| `realtime_"))
        .map(|(i, l)| row(l, i + 1))
        .collect()
}

fn row(line: &str, number: usize) -> Row {
    let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
    let [metric, kind, labels @ ..] = cells.as_slice() else {
        panic!("docs/OPERATIONS.md:{number}: a metric row needs a type and labels: {line}");
    };
    Row {
        metric: metric.trim_matches('`').to_owned(),
        kind: (*kind).to_owned(),
        mentioned: backticked(&labels.join("|")),
        line: number,
    }
}

fn backticked(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}
