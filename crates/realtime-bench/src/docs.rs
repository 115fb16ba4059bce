//! Saved outputs of a run (JSON, Markdown, SVGs) and docs/BENCHMARKS.md, regenerated
//! from the saved JSON: machine, how to rerun, headline against targets, each run.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

use crate::record::{Machine, RunRecord};
use crate::report::{self, thousands};
use crate::{headline, plot};

/// The scenarios, in the order they run in `all` and appear in docs/BENCHMARKS.md;
/// other scenarios follow alphabetically.
pub const ORDER: [&str; 11] = [
    "idle",
    "fanout",
    "saturation",
    "topics",
    "cross-node",
    "slow-consumer",
    "history-fanout",
    "recovery-storm",
    "presence-stats",
    "presence-churn",
    "sse",
];

const REPORT_COMMAND: &str = "cargo run --release -p realtime-bench -- report";

/// Saves `<dir>/<scenario>.json`, `.md`, and `-latency.svg` / `-throughput.svg` when the
/// run has data for them. Returns the paths written.
pub fn write_run_outputs(record: &RunRecord, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = vec![record.save(dir)?];
    let markdown = dir.join(format!("{}.md", record.scenario));
    std::fs::write(&markdown, report::markdown(record))
        .with_context(|| format!("writing {}", markdown.display()))?;
    written.push(markdown);
    written.extend(write_svgs(record, dir)?);
    Ok(written)
}

/// The two plots of `record`, next to its JSON; the paths of those that had data.
fn write_svgs(record: &RunRecord, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let latency = svg_path(dir, &record.scenario, "latency");
    if plot::latency_svg(record, &latency)? {
        written.push(latency);
    }
    let throughput = svg_path(dir, &record.scenario, "throughput");
    if plot::throughput_svg(record, &throughput)? {
        written.push(throughput);
    }
    Ok(written)
}

fn svg_path(dir: &Path, scenario: &str, kind: &str) -> PathBuf {
    dir.join(format!("{scenario}-{kind}.svg"))
}

/// Reads every `*.json` run in `results_dir`, redraws its SVGs there, and writes the
/// whole of docs/BENCHMARKS.md to `out`.
pub fn regenerate(results_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let records = load_all(results_dir)?;
    let out_dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir)?;
    let link_base = relative_path(&absolute(&out_dir)?, &absolute(results_dir)?);
    let mut images = Vec::new();
    for record in &records {
        let svgs = write_svgs(record, results_dir)?;
        images.push(svgs.iter().map(|p| image_link(&link_base, p)).collect());
    }
    let text = benchmarks_md(&records, &images, &link_base);
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

/// Every run record in `dir`, in [`ORDER`] then alphabetically.
fn load_all(dir: &Path) -> anyhow::Result<Vec<RunRecord>> {
    let mut records = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let record =
                RunRecord::load(&path).with_context(|| format!("loading {}", path.display()))?;
            records.push(record);
        }
    }
    records.sort_by_key(|r| order_key(&r.scenario));
    Ok(records)
}

fn order_key(scenario: &str) -> (usize, String) {
    let known = ORDER.iter().position(|s| *s == scenario);
    (known.unwrap_or(ORDER.len()), scenario.to_owned())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    match path.canonicalize() {
        Ok(path) => Ok(path),
        Err(_) if path.is_absolute() => Ok(path.to_owned()),
        Err(_) => Ok(std::env::current_dir()?.join(path)),
    }
}

/// The path of `to` relative to the directory `from`: `/w/docs`, `/w/c/r` → `../c/r`.
/// Both must be absolute and free of `.`/`..` (as `canonicalize` returns them).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel: PathBuf = from[common..].iter().map(|_| "..").collect();
    rel.extend(to[common..].iter());
    rel
}

/// A Markdown image of `svg`, linked relative to the docs file.
fn image_link(base: &Path, svg: &Path) -> String {
    let name = svg.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let target = base.join(&name).to_string_lossy().replace('\\', "/");
    let alt = name.trim_end_matches(".svg").replace('-', " ");
    format!("![{alt}]({target})")
}

/// The whole of docs/BENCHMARKS.md; `images[i]` are the image links of `records[i]`.
fn benchmarks_md(records: &[RunRecord], images: &[Vec<String>], link_base: &Path) -> String {
    let mut out = String::new();
    header(&mut out, link_base);
    machine(&mut out, records);
    rerun(&mut out, records);
    headline::headline(&mut out, records);
    for (record, images) in records.iter().zip(images) {
        out.push_str(&report::markdown(record));
        for image in images {
            let _ = writeln!(out, "{image}\n");
        }
    }
    limits(&mut out, records);
    out.push_str(PROFILING);
    out
}

/// How the engine was profiled while running these scenarios.
const PROFILING: &str = "## Profiling\n\n\
The engine was tuned by profiling the server process while a scenario runs. The \
machine has no hardware counters, so the profiles sample the `cpu-clock` software \
event:\n\n\
```sh\n\
cargo run --release -p realtime-bench -- fanout --servers realtime &\n\
sleep 10\n\
perf record -e cpu-clock -F 1999 --call-graph dwarf -p \"$(pgrep -f release/realtime-server)\" -- sleep 4\n\
perf report --no-children --sort symbol\n\
```\n\n\
Task sizes (what an idle connection's session costs) come from the compiler: \
`RUSTC_BOOTSTRAP=1 cargo rustc -p realtime --release --lib -- -Zprint-type-sizes`.\n";

fn header(out: &mut String, link_base: &Path) {
    let dir = link_base.to_string_lossy().replace('\\', "/");
    let _ = writeln!(
        out,
        "# Benchmarks\n\n\
         <!-- Generated file: do not edit by hand. -->\n\n\
         This file is generated by `{REPORT_COMMAND}` from the JSON run records in \
         [`{dir}`]({dir}). Do not edit it by hand: rerun the scenarios, then the report \
         command.\n\n\
         Every server is measured on the same machine, by the same generator, in the same \
         run: **realtime** is this project, **ceiling** is a bare axum WebSocket server \
         doing the least possible work (what the machine allows), **socketio** is a \
         Socket.IO peer.\n"
    );
}

fn machine(out: &mut String, records: &[RunRecord]) {
    out.push_str("## Machine\n\n");
    let Some(first) = records.first() else {
        out.push_str("No run recorded yet.\n\n");
        return;
    };
    let m = &first.machine;
    let _ = writeln!(
        out,
        "- CPU: {} ({} cores)\n- memory: {:.1} GiB\n- kernel: {}\n- open files limit per process: {}\n",
        m.cpu_model,
        m.cores,
        m.memory_gib,
        m.kernel,
        thousands(m.open_files_limit),
    );
    for other in records.iter().filter(|r| !same_machine(&r.machine, m)) {
        let _ = writeln!(
            out,
            "Note: `{}` ran on a different machine ({}, {} cores, {:.1} GiB); its figures \
             do not compare directly with the others.\n",
            other.scenario, other.machine.cpu_model, other.machine.cores, other.machine.memory_gib
        );
    }
}

fn same_machine(a: &Machine, b: &Machine) -> bool {
    a.cpu_model == b.cpu_model && a.cores == b.cores && a.kernel == b.kernel
}

fn rerun(out: &mut String, records: &[RunRecord]) {
    out.push_str("## How to rerun\n\nEach run, then this file:\n\n```sh\n");
    let mut seen = std::collections::HashSet::new();
    for record in records {
        let command = record.command.trim();
        if seen.insert(command) {
            let _ = writeln!(out, "{command}");
        }
    }
    let _ = writeln!(out, "{REPORT_COMMAND}\n```\n");
}

fn limits(out: &mut String, records: &[RunRecord]) {
    out.push_str("## What limits each figure\n\n");
    let machine = records.first().map(|r| &r.machine);
    out.push_str(&general_limits(machine));
    for record in records {
        let _ = writeln!(out, "### {}\n", record.scenario);
        if let Some(text) = scenario_limits(&record.scenario) {
            let _ = writeln!(out, "{text}\n");
        }
        let notes: Vec<String> = record
            .results
            .iter()
            .flat_map(|r| {
                r.notes
                    .iter()
                    .map(move |n| format!("- {}: {n}", report::label(r)))
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(out, "{}\n", notes.join("\n"));
        }
    }
}

fn general_limits(machine: Option<&Machine>) -> String {
    let cores = machine.map_or_else(|| "few".to_owned(), |m| m.cores.to_string());
    let files = machine.map_or_else(
        || "The open-files limit".to_owned(),
        |m| {
            format!(
                "The open-files limit ({} per process)",
                thousands(m.open_files_limit)
            )
        },
    );
    format!(
        "- The load generator runs on the same machine as the server and shares its {cores} \
         cores: every microsecond the generator spends is one the server does not get, so \
         throughput figures are lower bounds for a server on its own machine.\n\
         - Server CPU per delivery is read from `/proc/<pid>/stat` (utime + stime, all \
         threads) of the server process(es) and divided by deliveries. It counts the \
         server's own work whatever else runs, so it is the figure that survives a noisy \
         machine and the one to compare between servers.\n\
         - Latency is measured from the publisher's send to the subscriber's receive in the \
         generator, so it includes the generator's own scheduling delay on a busy machine; \
         the server's share is smaller.\n\
         - {files} bounds the sockets, and so the connections, one generator process can \
         hold; the server under test has the same limit.\n\
         - In the multi-node scenarios (topics, cross-node) and with the Redis store \
         (history-fanout, recovery-storm) Redis runs on the same machine too, competing \
         for the same cores, and its CPU is not counted in the server's CPU.\n\
         - Other processes may run on the machine during a measurement (the runs recorded \
         here shared it with compilers); each measurement's machine-load note gives their \
         share as \"other processes\". CPU per delivery counts only the server's own CPU \
         time, so it is the figure they disturb least, though cache and scheduler \
         contention still raise it; latencies and rates suffer more.\n\n"
    )
}

fn scenario_limits(scenario: &str) -> Option<&'static str> {
    Some(match scenario {
        "idle" => {
            "Idle connections measure memory and handshake rate, not delivery. RSS per \
             connection is the server's RSS after connecting minus before, divided by the \
             connections: it includes allocator slack and whatever else the server \
             allocated meanwhile. Handshakes/s is plain `ws://` connect and upgrade \
             (authenticated where the server requires it), bounded by the generator \
             opening connections on the same cores. For realtime a handshake ends only \
             when its welcome frame arrives: one more write for the server and one more \
             read for the generator than the ceiling's bare upgrade, on the same two \
             cores, besides the JWT check. The notes give each server's CPU per \
             handshake."
        }
        "fanout" => {
            "One topic, many subscribers, a fixed publish rate below saturation: every server \
             keeps up, so deliveries/s is the offered rate and the comparable figure is CPU \
             per delivery. Latency at this rate is mostly scheduling delay: a publish \
             fans out to every subscriber on two cores shared with the generator \
             receiving them all. Frames of realtime are about 55 bytes longer than the \
             posted message (the server adds `timestamp` and `topic`), which costs the \
             generator more per frame; rerun the ceiling with `--size 160` and its \
             latency curve meets realtime's."
        }
        "saturation" => {
            "Fanout offered beyond what the machine can serve (see the parameters). \
             Deliveries/s is what the server delivered while the generator, on the same \
             cores, was itself busy receiving, so it measures the pair, not the server \
             alone. A server that closes subscribers which fall behind (close 3008) sheds \
             load; their undelivered messages are counted as accounted by close, not lost."
        }
        "topics" => {
            "Nodes over Redis with subscribers and publishes spread across topics and nodes. \
             Redis and every node share the machine's cores with the generator, so the \
             p99 latency includes a Redis round trip and contention between all of them; \
             server CPU is summed over the nodes. Each publish is an HTTP request and \
             each delivery a socket write of its own (50 messages/s per subscriber leave \
             nothing to batch), so at the higher rate the notes show the two cores \
             saturated by servers, Redis and generator together, and the tail latency \
             is queueing for a core."
        }
        "cross-node" => {
            "Publishes on node A reach subscribers on node B through Redis on the same \
             machine, compared with the same fan-out on one node. Latency includes the \
             Redis hop; CPU per delivery counts both nodes but not Redis. There is no \
             ceiling here."
        }
        "slow-consumer" => {
            "One subscriber stops reading. The figure that matters is that the others keep \
             receiving and that the stalled one is closed (3008) with its undelivered \
             messages accounted by close; how soon depends on the outbound queue size and \
             the socket buffers of the kernel."
        }
        "history-fanout" => {
            "The fanout scenario on one node, per store and per round: the topic without \
             history, and the same topic in a namespace keeping history (see the \
             parameters), in alternating order from round to round; the headline compares \
             the medians. A publication on a history topic is appended to the store once \
             before it fans out, and every delivered frame carries `offset` and `epoch` \
             (about 45 bytes more), so what history adds per delivery shrinks as \
             subscribers per publish grow. With the Redis store the append is a Redis \
             round trip made by the node; Redis's own CPU is in the machine-load note, not \
             in the server's CPU. CPU per delivery also falls when the server is starved \
             of CPU (it then writes more frames per system call): compare rounds whose \
             machine-load notes show similar shares of other processes."
        }
        "recovery-storm" => {
            "Every client of one history topic drops its socket at the same moment, the \
             given number of messages is published while they are away, and every client \
             reconnects at the same moment with `since` = the last position it had, while \
             a few more messages are published live. The catch-up time of a client runs \
             from the start of the storm to the moment it holds the last offset published \
             before it; it includes its TCP and WebSocket handshake, the JWT check and the \
             subscribe, all of them competing with the other clients on the same cores as \
             the generator. Lost and duplicated are counted by sequence number in the \
             message bodies; offset order (no offset skipped or repeated, one epoch) is \
             checked separately by the generator."
        }
        "presence-stats" => {
            "One node holds a topic of many members, one WebSocket connection each (every \
             tenth connection shares its user with the one before, as two tabs would), and \
             a topic of a few as the yardstick. One client asks one question at a time and \
             waits for its answer: the latency is a round trip through the generator's own \
             scheduler on the same cores, not the server's work alone, which the CPU per \
             answer gives. Over WebSocket the client asks without being subscribed; over \
             HTTP it uses one keep-alive connection with the API key. The node runs \
             with `command_rate = 0` so that one connection may ask thousands of \
             questions a second. The counts and pages \
             of every answer are checked against the connections the generator opened, and \
             the large topic is paged through once to check that every connection is \
             listed exactly once. With the Redis store each answer is a Redis round trip \
             from the node; Redis's CPU is in the machine-load note."
        }
        "presence-churn" => {
            "Connections join and leave one topic at a steady rate while a few watchers stay \
             subscribed: each churner connects, subscribes, and then half unsubscribe before \
             closing and half close without. CPU per 1,000 pairs is the server's CPU over \
             the churn divided by the pairs, so it includes each churner's TCP and WebSocket \
             handshake and JWT check, the same with presence on and off. Online status (for \
             `GET /api/users/{id}/presence` and the webhooks) is kept for every \
             connection either way, so the run without presence already pays for it; \
             the difference is what topic presence (membership, counts, and the join \
             and leave frames to every watcher) adds. With \
             presence on the watchers' own tally checks one join and one leave per churner \
             each, and the topic's counts return to the watchers alone; with it off, no \
             frame and `no_presence`. Redis's CPU is in the machine-load note, not in the \
             server's."
        }
        "sse" => {
            "The same `realtime-server` binary and the same load over WebSocket and \
             over Server-Sent Events, side by side in one run: the fanout load (one \
             topic, every subscriber on it, a fixed publish rate below saturation) and \
             the idle load (connections that only hold their stream), each round \
             measuring both transports in turn on a fresh server process, WebSocket \
             first in odd rounds and SSE first in even ones; the headline compares \
             the medians. A WebSocket subscriber sends `subscribe` after the welcome; \
             an SSE subscriber names the topic in `GET /sse?topic=` and is counted \
             once its `subscribed` event arrives. Every delivery is tallied by the \
             sequence number in its body, once per subscriber: a lost or duplicated \
             message fails a `--quick` run. The generator's SSE client is plain \
             HTTP/1.1 on a TCP socket with an incremental event parser, as light per \
             event as its WebSocket client is per frame. An SSE delivery is the same \
             JSON as the WebSocket frame, framed as `data: …` and a blank line (8 \
             bytes) inside an HTTP chunk (a size line and a CRLF per chunk, shared by \
             the events written together), against a WebSocket frame header of 2 to \
             4 bytes. For idle, the server's own \
             `realtime_connections_by_transport` gauge must count every connection \
             the generator holds, on the transport it used. What limits SSE's idle \
             figure: a stream is the body of an HTTP/1.1 response, so its connection \
             stays inside hyper for its whole life, with hyper's read buffer (grown \
             to 8 KiB by the first read) and its header write buffer (created with \
             8 KiB, `INIT_BUFFER_SIZE` in hyper 1.x `proto/h1/io.rs`, neither \
             configurable), about 16 KiB that a WebSocket gives back when it leaves \
             hyper at the upgrade."
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::Latency;
    use crate::report::tests::{delivery, fanout, idle, machine};

    fn temp_dir(name: &str) -> PathBuf {
        absolute(&crate::report::tests::temp_dir("docs", name)).unwrap()
    }

    fn saturation(ours_per_s: f64, lost: u64) -> RunRecord {
        let mut ours = delivery("realtime", "realtime", 4.9, ours_per_s);
        ours.lost = Some(lost);
        ours.accounted_by_close = Some(3_000);
        ours.notes = vec!["subscribers closed with 3008 when their queue filled".into()];
        let mut record = fanout(false);
        record.scenario = "saturation".into();
        record.command = "cargo run --release -p realtime-bench -- saturation".into();
        record.results = vec![ours, delivery("ceiling", "ceiling", 4.7, 400_000.0)];
        record
    }

    fn topics(p99_at_5000_us: f64) -> RunRecord {
        let at = |label: &str, p99_us: f64| {
            let mut r = delivery("realtime", label, 6.0, 50_000.0);
            r.latency = Some(Latency {
                count: 1_000,
                p50_us: 900.0,
                p95_us: p99_us * 0.8,
                p99_us,
                p999_us: p99_us * 2.0,
                max_us: p99_us * 3.0,
            });
            r
        };
        RunRecord {
            scenario: "topics".into(),
            started_at: "2025-01-01T13:00:00Z".into(),
            command: "cargo run --release -p realtime-bench -- topics".into(),
            quick: false,
            machine: machine(),
            params: json!({"nodes": 3, "rates": [1000.0, 5000.0, 15000.0]}),
            results: vec![
                at("realtime 3 nodes, 1,000/s", 1_000.0),
                at("realtime 3 nodes, 15,000/s", 4_000.0),
                at("realtime 3 nodes, 5,000/s", p99_at_5000_us),
            ],
        }
    }

    fn row<'a>(md: &'a str, figure: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(&format!("| {figure} |")))
            .unwrap_or_else(|| panic!("no headline row {figure}:\n{md}"))
    }

    #[test]
    fn relative_path_climbs_out_of_the_docs_dir() {
        let rel = relative_path(
            Path::new("/work/main/docs"),
            Path::new("/work/main/crates/realtime-bench/results"),
        );
        assert_eq!(rel, Path::new("../crates/realtime-bench/results"));
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/b")),
            Path::new("")
        );
        assert_eq!(
            relative_path(Path::new("/a"), Path::new("/a/r")),
            Path::new("r")
        );
    }

    #[test]
    fn order_puts_known_scenarios_first() {
        let mut names = ["zeta", "topics", "alpha", "idle", "slow-consumer", "fanout"];
        names.sort_by_key(|s| order_key(s));
        assert_eq!(
            names,
            ["idle", "fanout", "topics", "slow-consumer", "alpha", "zeta"]
        );
    }

    #[test]
    fn write_run_outputs_writes_json_markdown_and_plots() {
        let dir = temp_dir("outputs");
        let written = write_run_outputs(&fanout(true), &dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "fanout.json",
                "fanout.md",
                "fanout-latency.svg",
                "fanout-throughput.svg"
            ]
        );
        assert!(written.iter().all(|p| p.exists()));
        let md = std::fs::read_to_string(dir.join("fanout.md")).unwrap();
        assert!(md.contains("Quick smoke run"));
        let idle_written = write_run_outputs(&idle(15_000, 6.0, 9_000.0, 10_000.0), &dir).unwrap();
        assert_eq!(idle_written.len(), 2, "idle has no latency or timeline");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn regenerate_writes_headline_verdicts_and_relative_images() {
        let root = temp_dir("regenerate");
        let results = root.join("crates/realtime-bench/results");
        let docs = root.join("docs/BENCHMARKS.md");
        fanout(false).save(&results).unwrap();
        // realtime 380,000/s vs ceiling 400,000/s = 0.95, but 5 lost: rate met, loss not.
        saturation(380_000.0, 5).save(&results).unwrap();
        // 7.5 KiB but only 10,000 connections; handshakes 7,000 vs 10,000 = 0.7.
        idle(10_000, 7.5, 7_000.0, 10_000.0).save(&results).unwrap();
        topics(6_200.0).save(&results).unwrap();
        regenerate(&results, &docs).unwrap();
        let md = std::fs::read_to_string(&docs).unwrap();

        assert!(md.contains("generated by `cargo run --release -p realtime-bench -- report`"));
        assert!(md.contains("- CPU: AMD EPYC 7B13 (2 cores)"));
        let eff = row(&md, "fanout: server CPU per delivery");
        assert!(
            eff.contains("5.00 µs vs 4.70 µs (1.06×)") && eff.ends_with("| yes |"),
            "{eff}"
        );
        assert!(row(&md, "fanout: lost and duplicated").ends_with("| yes |"));
        let rate = row(&md, "saturation: deliveries/s");
        assert!(rate.contains("380,000/s vs 400,000/s (0.95×)") && rate.ends_with("| yes |"));
        let loss = row(&md, "saturation: silent loss");
        assert!(loss.contains("lost 5, 3,000 accounted by close") && loss.ends_with("| **no** |"));
        let memory = row(&md, "idle: server RSS per connection");
        assert!(
            memory.contains("not shown: only 10,000 connections"),
            "{memory}"
        );
        let topics = row(&md, "topics: p99 latency at 5,000 publishes/s");
        assert!(
            topics.contains("6.20 ms (realtime 3 nodes, 5,000/s)"),
            "{topics}"
        );
        assert!(topics.ends_with("| **no** |"), "{topics}");
        let hs = row(&md, "idle: handshakes/s");
        assert!(hs.contains("(0.70×)") && hs.ends_with("| **no** |"), "{hs}");

        let idle_at = md.find("## idle\n").unwrap();
        let fanout_at = md.find("## fanout\n").unwrap();
        let saturation_at = md.find("## saturation\n").unwrap();
        let topics_at = md.find("## topics\n").unwrap();
        assert!(idle_at < fanout_at && fanout_at < saturation_at && saturation_at < topics_at);
        assert!(
            md.contains("![fanout latency](../crates/realtime-bench/results/fanout-latency.svg)")
        );
        assert!(results.join("topics-throughput.svg").exists());
        assert!(md.contains("## What limits each figure"));
        assert!(md.contains("- realtime: subscribers closed with 3008 when their queue filled"));
        assert!(md.contains("open-files limit (20,000 per process)"));
        assert!(
            md.contains("|---|---|---|---|"),
            "headline columns are text"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn regenerate_marks_missing_runs_not_measured() {
        let root = temp_dir("missing");
        let results = root.join("results");
        idle(20_000, 6.1, 9_000.0, 10_000.0).save(&results).unwrap();
        let docs = root.join("BENCHMARKS.md");
        regenerate(&results, &docs).unwrap();
        let md = std::fs::read_to_string(&docs).unwrap();
        assert!(row(&md, "idle: server RSS per connection").ends_with("| yes |"));
        assert!(row(&md, "idle: handshakes/s").ends_with("| yes |"));
        let eff = row(&md, "fanout: server CPU per delivery");
        assert!(
            eff.contains("no fanout run") && eff.ends_with("| not measured |"),
            "{eff}"
        );
        assert!(row(&md, "saturation: silent loss").ends_with("| not measured |"));
        assert!(!md.contains("!["), "idle has no plots");
        std::fs::remove_dir_all(root).unwrap();
    }
}
