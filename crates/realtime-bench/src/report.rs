//! Markdown for one saved run: the command, the parameters, a results table with only
//! the columns measured, ratios to the bare-axum ceiling, and each result's notes.

use std::fmt::Write as _;

use crate::record::{CloseCount, RunRecord, ServerResult};

/// A Markdown section for one run, starting with a `##` heading.
pub fn markdown(record: &RunRecord) -> String {
    let mut out = String::new();
    heading(&mut out, record);
    command(&mut out, record);
    params(&mut out, &record.params);
    results_table(&mut out, &record.results);
    ratio_table(&mut out, &record.results);
    notes(&mut out, &record.results);
    out
}

fn heading(out: &mut String, record: &RunRecord) {
    let _ = writeln!(out, "## {}\n", record.scenario);
    if record.quick {
        let _ = writeln!(
            out,
            "> **Quick smoke run — too short to quote.** It checks that the scenario works \
             end to end; rerun without `--quick` for figures.\n"
        );
    }
    let _ = writeln!(out, "Started {}.\n", record.started_at);
}

fn command(out: &mut String, record: &RunRecord) {
    let _ = writeln!(out, "```sh\n{}\n```\n", record.command.trim());
}

fn params(out: &mut String, params: &serde_json::Value) {
    match params {
        serde_json::Value::Object(map) if !map.is_empty() => {
            out.push_str("Parameters:\n\n");
            for (key, value) in map {
                let _ = writeln!(out, "- {key}: {}", param_value(value));
            }
            out.push('\n');
        }
        serde_json::Value::Object(_) | serde_json::Value::Null => {}
        other => {
            let _ = writeln!(out, "Parameters: `{other}`\n");
        }
    }
}

/// A parameter as a reader wants it: strings bare, numbers grouped, lists comma-separated.
fn param_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(int), _) => thousands(int),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => grouped(f, 0),
            (None, Some(f)) => sensible(f),
            (None, None) => n.to_string(),
        },
        serde_json::Value::Array(items) => {
            items.iter().map(param_value).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// One table column: its header and how to read a cell from a result.
struct Column {
    header: &'static str,
    cell: fn(&ServerResult) -> Option<String>,
}

fn columns() -> Vec<Column> {
    vec![
        col("connections", |r| {
            (r.connections > 0).then(|| thousands(r.connections as u64))
        }),
        col("failed", |r| {
            (r.failed_connections > 0).then(|| thousands(r.failed_connections as u64))
        }),
        col("handshakes/s", |r| {
            r.handshakes_per_s.map(|v| grouped(v, 0))
        }),
        col("RSS/conn KiB", |r| {
            r.rss_per_connection_kib.map(|v| grouped(v, 2))
        }),
        col("published", |r| r.published.map(thousands)),
        col("expected", |r| r.expected.map(thousands)),
        col("delivered", |r| r.delivered.map(thousands)),
        col("deliveries/s", |r| {
            r.deliveries_per_s.map(|v| grouped(v, 0))
        }),
        col("CPU µs/delivery", |r| r.cpu_us_per_delivery.map(sensible)),
        col("lost", |r| r.lost.map(thousands)),
        col("duplicated", |r| r.duplicated.map(thousands)),
        col("accounted by close", |r| {
            r.accounted_by_close.map(thousands)
        }),
        col("told missed", |r| r.accounted_by_notice.map(thousands)),
        col("offset errors", |r| r.offset_errors.map(thousands)),
        col("recovered", |r| r.recovered.map(thousands)),
        col("not recovered", |r| r.not_recovered.map(thousands)),
        col("all caught up ms", |r| {
            r.all_caught_up_ms.map(|v| grouped(v, 1))
        }),
        col("catch-up p50 ms", |r| {
            r.catch_up.as_ref().map(|l| ms(l.p50_us))
        }),
        col("catch-up p99 ms", |r| {
            r.catch_up.as_ref().map(|l| ms(l.p99_us))
        }),
        col("catch-up max ms", |r| {
            r.catch_up.as_ref().map(|l| ms(l.max_us))
        }),
        col("CPU µs/answer", |r| r.cpu_us_per_answer.map(sensible)),
        col("join/leave pairs", |r| r.pairs.map(thousands)),
        col("CPU s/1,000 pairs", |r| {
            r.cpu_s_per_1000_pairs.map(sensible)
        }),
        col("tally mismatches", |r| r.tally_mismatches.map(thousands)),
        col("p50 ms", |r| r.latency.as_ref().map(|l| ms(l.p50_us))),
        col("p95 ms", |r| r.latency.as_ref().map(|l| ms(l.p95_us))),
        col("p99 ms", |r| r.latency.as_ref().map(|l| ms(l.p99_us))),
        col("p99.9 ms", |r| r.latency.as_ref().map(|l| ms(l.p999_us))),
        col("max ms", |r| r.latency.as_ref().map(|l| ms(l.max_us))),
        col("peak RSS MiB", |r| {
            r.rss_peak_kib.map(|kib| grouped(kib as f64 / 1024.0, 1))
        }),
    ]
}

fn col(header: &'static str, cell: fn(&ServerResult) -> Option<String>) -> Column {
    Column { header, cell }
}

fn results_table(out: &mut String, results: &[ServerResult]) {
    if results.is_empty() {
        out.push_str("No results recorded.\n\n");
        return;
    }
    let shown: Vec<Column> = columns()
        .into_iter()
        .filter(|c| results.iter().any(|r| (c.cell)(r).is_some()))
        .collect();
    let mut header = vec!["server".to_owned()];
    header.extend(shown.iter().map(|c| c.header.to_owned()));
    let rows = results.iter().map(|r| {
        let mut row = vec![label(r)];
        row.extend(shown.iter().map(|c| (c.cell)(r).unwrap_or_else(dash)));
        row
    });
    table(out, &header, rows);
}

/// One ratio to the ceiling: how to read the figure and which way is better.
struct Ratio {
    header: &'static str,
    value: fn(&ServerResult) -> Option<f64>,
}

fn ratios() -> [Ratio; 4] {
    [
        Ratio {
            header: "CPU/delivery (lower is better)",
            value: |r| r.cpu_us_per_delivery,
        },
        Ratio {
            header: "deliveries/s (higher is better)",
            value: |r| r.deliveries_per_s,
        },
        Ratio {
            header: "handshakes/s (higher is better)",
            value: |r| r.handshakes_per_s,
        },
        Ratio {
            header: "RSS/conn (lower is better)",
            value: |r| r.rss_per_connection_kib,
        },
    ]
}

/// `ours / ceiling` for one figure, when both were measured and the ceiling's is not 0.
fn ratio_of(
    ours: &ServerResult,
    ceiling: &ServerResult,
    value: fn(&ServerResult) -> Option<f64>,
) -> Option<f64> {
    let (ours, ceiling) = (value(ours)?, value(ceiling)?);
    (ceiling > 0.0).then(|| ours / ceiling)
}

fn ratio_table(out: &mut String, results: &[ServerResult]) {
    let Some(ceiling) = results.iter().find(|r| r.server == "ceiling") else {
        return;
    };
    let others: Vec<&ServerResult> = results.iter().filter(|r| r.server != "ceiling").collect();
    let shown: Vec<Ratio> = ratios()
        .into_iter()
        .filter(|m| {
            others
                .iter()
                .any(|r| ratio_of(r, ceiling, m.value).is_some())
        })
        .collect();
    if others.is_empty() || shown.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Ratio to ceiling (each figure ÷ the same figure of {}):\n",
        label(ceiling)
    );
    let mut header = vec!["server".to_owned()];
    header.extend(shown.iter().map(|m| m.header.to_owned()));
    let rows = others.iter().map(|r| {
        let mut row = vec![label(r)];
        row.extend(
            shown
                .iter()
                .map(|m| ratio_of(r, ceiling, m.value).map_or_else(dash, |x| format!("{x:.2}×"))),
        );
        row
    });
    table(out, &header, rows);
}

fn notes(out: &mut String, results: &[ServerResult]) {
    let mut lines = Vec::new();
    for r in results {
        let who = label(r);
        lines.extend(r.notes.iter().map(|n| format!("- {who}: {n}")));
        if !r.closes.is_empty() {
            lines.push(format!("- {who}: server closed {}", closes(&r.closes)));
        }
    }
    if lines.is_empty() {
        return;
    }
    out.push_str("Notes:\n\n");
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}

/// `3008 slow consumer × 12, 1001 server shutting down × 1`.
fn closes(closes: &[CloseCount]) -> String {
    closes
        .iter()
        .map(|c| match close_name(c.code) {
            Some(name) => format!("{} {name} × {}", c.code, thousands(c.count)),
            None => format!("{} × {}", c.code, thousands(c.count)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reason texts of the close codes in docs/PROTOCOL.md (and 1006, seen by clients only).
fn close_name(code: u16) -> Option<&'static str> {
    Some(match code {
        1000 => "normal closure",
        1001 => "server shutting down",
        1006 => "abnormal closure (no close frame)",
        1008 => "policy violation",
        1009 => "message too big",
        1011 => "internal error",
        1013 => "try again later",
        3008 => "slow consumer",
        3012 => "no pong",
        3503 => "disconnected by server",
        _ => return None,
    })
}

/// A result's table label: its `label`, or its `server` when the label is empty.
pub(crate) fn label(r: &ServerResult) -> String {
    let text = if r.label.trim().is_empty() {
        &r.server
    } else {
        &r.label
    };
    text.replace('|', "\\|")
}

fn dash() -> String {
    "—".to_owned()
}

/// A Markdown table of figures: the first column left-aligned, the others right-aligned.
pub(crate) fn table(
    out: &mut String,
    header: &[String],
    rows: impl IntoIterator<Item = Vec<String>>,
) {
    aligned_table(out, header, rows, true);
}

/// A Markdown table whose columns are all left-aligned unless `figures`.
pub(crate) fn aligned_table(
    out: &mut String,
    header: &[String],
    rows: impl IntoIterator<Item = Vec<String>>,
    figures: bool,
) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i == 0 || !figures { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

/// `100000` → `100,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `v` with `decimals` decimals and a grouped integer part: `12345.678, 2` → `12,345.68`.
pub(crate) fn grouped(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let int = int
        .parse::<u64>()
        .map_or_else(|_| int.to_owned(), thousands);
    let sign = if v < 0.0 && text.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        "-"
    } else {
        ""
    };
    match frac {
        "" => format!("{sign}{int}"),
        frac => format!("{sign}{int}.{frac}"),
    }
}

/// Decimals that suit the magnitude: `4.7` → `4.70`, `42.31` → `42.3`, `0.012` → `0.012`.
pub(crate) fn sensible(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 1000.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 0.1 || a == 0.0 => 2,
        _ => 3,
    };
    grouped(v, decimals)
}

/// Microseconds as milliseconds with 2 decimals.
pub(crate) fn ms(us: f64) -> String {
    grouped(us / 1000.0, 2)
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::{Latency, Machine, TimelinePoint};

    /// A fresh directory for one test's files, under the system temp dir.
    pub(crate) fn temp_dir(module: &str, name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "realtime-bench-{module}-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) fn machine() -> Machine {
        Machine {
            cpu_model: "AMD EPYC 7B13".into(),
            cores: 2,
            memory_gib: 7.8,
            kernel: "6.8.0-45-generic".into(),
            open_files_limit: 20_000,
        }
    }

    fn timeline(rate: f64, cpu: f64) -> Vec<TimelinePoint> {
        (0..10)
            .map(|t| TimelinePoint {
                t_s: t as f64,
                deliveries_per_s: rate + (t % 3) as f64 * 1000.0,
                server_cpu_percent: cpu,
                server_rss_kib: 40_000 + t * 100,
            })
            .collect()
    }

    fn buckets(scale: f64) -> Vec<(f64, u64)> {
        vec![
            (250.0 * scale, 100),
            (500.0 * scale, 40_000),
            (1000.0 * scale, 50_000),
            (2000.0 * scale, 9_000),
            (4000.0 * scale, 800),
            (8000.0 * scale, 99),
            (20_000.0 * scale, 1),
        ]
    }

    /// A delivery result as the generator saves one.
    pub(crate) fn delivery(server: &str, label: &str, cpu_us: f64, per_s: f64) -> ServerResult {
        let scale = match server {
            "ceiling" => 0.8,
            "socketio" => 2.5,
            _ => 1.0,
        };
        ServerResult {
            server: server.into(),
            label: label.into(),
            connections: 1000,
            published: Some(100),
            expected: Some(100_000),
            delivered: Some(100_000),
            deliveries_per_s: Some(per_s),
            cpu_us_per_delivery: Some(cpu_us),
            server_cpu_s: Some(0.5),
            lost: Some(0),
            duplicated: Some(0),
            latency: Some(Latency {
                count: 100_000,
                p50_us: 812.0,
                p95_us: 1_904.5,
                p99_us: 3_210.0,
                p999_us: 7_400.0,
                max_us: 19_870.0,
            }),
            rss_peak_kib: Some(52_224),
            latency_buckets: buckets(scale),
            timeline: timeline(per_s, 60.0 * scale),
            ..ServerResult::default()
        }
    }

    pub(crate) fn fanout(quick: bool) -> RunRecord {
        let mut socketio = delivery("socketio", "Socket.IO 4 (Node 20)", 23.5, 61_000.0);
        socketio.notes = vec!["Node runs on one core".into()];
        socketio.lost = Some(12);
        RunRecord {
            scenario: "fanout".into(),
            started_at: "2025-01-01T12:00:00Z".into(),
            command: "cargo run --release -p realtime-bench -- fanout".into(),
            quick,
            machine: machine(),
            params: json!({"subscribers": 1000, "rate": 100.0, "message_size": 128,
                           "duration_s": 30.0, "transport": "ws"}),
            results: vec![
                delivery("realtime", "realtime", 5.0, 100_000.0),
                delivery("ceiling", "ceiling (bare axum)", 4.7, 100_000.0),
                socketio,
            ],
        }
    }

    pub(crate) fn idle(connections: usize, rss_kib: f64, hs: f64, ceiling_hs: f64) -> RunRecord {
        let result = |server: &str, rss: f64, hs: f64| ServerResult {
            server: server.into(),
            label: server.into(),
            connections,
            handshakes_per_s: Some(hs),
            rss_per_connection_kib: Some(rss),
            rss_before_kib: Some(10_000),
            rss_after_kib: Some(10_000 + (rss * connections as f64) as u64),
            rss_peak_kib: Some(10_000 + (rss * connections as f64) as u64),
            ..ServerResult::default()
        };
        RunRecord {
            scenario: "idle".into(),
            started_at: "2025-01-01T11:00:00Z".into(),
            command: "cargo run --release -p realtime-bench -- idle --connections 15000".into(),
            quick: false,
            machine: machine(),
            params: json!({ "connections": connections }),
            results: vec![
                result("realtime", rss_kib, hs),
                result("ceiling", 5.1, ceiling_hs),
            ],
        }
    }

    fn header_line(md: &str) -> &str {
        md.lines()
            .find(|l| l.starts_with("| server | connections"))
            .expect("results table header")
    }

    #[test]
    fn table_keeps_only_measured_columns() {
        let md = markdown(&idle(15_000, 6.4, 9_000.0, 10_000.0));
        let header = header_line(&md);
        assert!(header.contains("handshakes/s"), "{header}");
        assert!(header.contains("RSS/conn KiB"), "{header}");
        assert!(!header.contains("p99 ms"), "{header}");
        assert!(!header.contains("deliveries/s"), "{header}");
        assert!(!header.contains("failed"), "{header}");
        assert!(md.contains("| realtime | 15,000 | 9,000 | 6.40 |"), "{md}");
    }

    #[test]
    fn latency_and_delivery_columns_are_formatted() {
        let md = markdown(&fanout(false));
        let header = header_line(&md);
        for column in ["p50 ms", "p99.9 ms", "max ms", "lost", "CPU µs/delivery"] {
            assert!(header.contains(column), "{column} missing: {header}");
        }
        assert!(!header.contains("handshakes/s"), "{header}");
        assert!(!header.contains("accounted by close"), "{header}");
        assert!(
            md.contains("| realtime | 1,000 | 100 | 100,000 | 100,000 | 100,000 | 5.00 | 0 | 0 | 0.81 | 1.90 | 3.21 | 7.40 | 19.87 | 51.0 |"),
            "{md}"
        );
    }

    #[test]
    fn ratio_to_ceiling_divides_ours_by_the_ceiling() {
        let md = markdown(&fanout(false));
        assert!(md.contains("Ratio to ceiling"), "{md}");
        // 5.0 / 4.7 = 1.0638; 23.5 / 4.7 = 5.0; deliveries 100,000 / 100,000 = 1.
        assert!(md.contains("| realtime | 1.06× | 1.00× |"), "{md}");
        assert!(
            md.contains("| Socket.IO 4 (Node 20) | 5.00× | 0.61× |"),
            "{md}"
        );
        assert!(!md.contains("| ceiling (bare axum) | 1.00×"), "{md}");
        let ratio_header = md
            .lines()
            .find(|l| l.starts_with("| server | CPU/delivery"))
            .unwrap();
        assert!(!ratio_header.contains("handshakes"), "{ratio_header}");
    }

    #[test]
    fn no_ratio_table_without_a_ceiling() {
        let mut record = fanout(false);
        record.results.retain(|r| r.server != "ceiling");
        assert!(!markdown(&record).contains("Ratio to ceiling"));
    }

    #[test]
    fn quick_runs_are_marked_and_full_runs_are_not() {
        assert!(markdown(&fanout(true)).contains("Quick smoke run — too short to quote"));
        assert!(!markdown(&fanout(false)).contains("Quick smoke run"));
    }

    #[test]
    fn command_params_notes_and_closes_are_listed() {
        let mut record = fanout(false);
        record.results[0].closes = vec![CloseCount {
            code: 3008,
            count: 1_200,
        }];
        let md = markdown(&record);
        assert!(md.starts_with("## fanout\n"), "{md}");
        assert!(md.contains("```sh\ncargo run --release -p realtime-bench -- fanout\n```"));
        assert!(md.contains("- subscribers: 1,000\n"), "{md}");
        assert!(md.contains("- rate: 100\n"), "{md}");
        assert!(md.contains("- transport: ws\n"), "{md}");
        assert!(md.contains("- Socket.IO 4 (Node 20): Node runs on one core"));
        assert!(md.contains("- realtime: server closed 3008 slow consumer × 1,200"));
    }

    #[test]
    fn numbers_are_grouped_with_sensible_decimals() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(grouped(12_345.678, 2), "12,345.68");
        assert_eq!(grouped(-1_500.0, 0), "-1,500");
        assert_eq!(grouped(-0.001, 1), "0.0");
        assert_eq!(sensible(4.7), "4.70");
        assert_eq!(sensible(42.31), "42.3");
        assert_eq!(sensible(0.0123), "0.012");
        assert_eq!(sensible(123_456.7), "123,457");
        assert_eq!(ms(3_210.0), "3.21");
        assert_eq!(param_value(&json!([1000.0, 5000.0])), "1,000, 5,000");
    }
}
