//! The idle scenario: open N authenticated connections (WebSocket, or SSE to our
//! server) to one server, then report handshakes per second and server RSS per
//! connection.

use anyhow::bail;
use realtime_core::Transport;

use crate::client::ConnSpec;
use crate::delivery::round;
use crate::fleet::{Fleet, Member};
use crate::procstat::ProcWatch;
use crate::progress;
use crate::record::ServerResult;
use crate::servers::{Kind, ServerProcess};

/// Opens `connections` idle connections to `server` over `transport` and
/// measures it. For our server, its own gauge of connections by transport must
/// agree with the connections the generator holds.
pub async fn run(
    server: &ServerProcess,
    connections: usize,
    transport: Transport,
) -> anyhow::Result<ServerResult> {
    let watch = ProcWatch::new(vec![server.pid()]);
    let tokens = match server.kind {
        Kind::Realtime => crate::tokens::mint(connections),
        _ => Vec::new(),
    };
    let members: Vec<Member> = (0..connections)
        .map(|i| Member {
            spec: ConnSpec {
                kind: server.kind,
                server: server.addr,
                index: i,
                token: tokens.get(i).cloned(),
                topic: None,
                recv_buffer: None,
            },
            transport,
            topic: 0,
            stalled: false,
        })
        .collect();
    let before = watch.sample();
    let bar = progress::bar(connections as u64, "connecting");
    let fleet = Fleet::open(members, || bar.inc(1)).await;
    bar.finish_and_clear();
    // Every handshake ended with the server's last frame: nothing is pending.
    let after = watch.sample();
    let handshake_cpu = after.cpu_since(&before);
    let open = fleet.len();
    let mut notes = Vec::new();
    if let Some(e) = &fleet.first_error {
        notes.push(format!(
            "{} connections failed; first error: {e}",
            fleet.failed
        ));
    }
    if open > 0 {
        notes.push(format!(
            "server CPU per handshake: {:.0} µs",
            handshake_cpu * 1e6 / open as f64
        ));
    }
    if server.kind == Kind::Realtime {
        let counted =
            crate::servers::connections_by_transport(server.addr, transport.as_str()).await;
        if counted != Some(open as u64) {
            bail!(
                "idle over {}: the generator holds {open} connections, the server's realtime_connections_by_transport says {counted:?}",
                transport.as_str()
            );
        }
        notes.push(match transport {
            Transport::Websocket => "a handshake ends when the welcome frame arrives (JWT verified, connection registered)".into(),
            Transport::Sse => "a handshake ends when the welcome event arrives (JWT verified, connection registered, response headers and the retry field written)".into(),
        });
    }
    let result = ServerResult {
        server: server.kind.name().to_owned(),
        label: server.kind.name().to_owned(),
        connections: open,
        failed_connections: fleet.failed,
        handshakes_per_s: Some(round(
            open as f64 / fleet.open_elapsed.as_secs_f64().max(1e-6),
            0,
        )),
        rss_per_connection_kib: (open > 0).then(|| {
            round(
                (after.rss_kib.saturating_sub(before.rss_kib)) as f64 / open as f64,
                2,
            )
        }),
        rss_before_kib: Some(before.rss_kib),
        rss_after_kib: Some(after.rss_kib),
        rss_peak_kib: Some(after.rss_kib),
        server_cpu_s: Some(round(handshake_cpu, 3)),
        notes,
        ..ServerResult::default()
    };
    fleet.finish().await;
    Ok(result)
}
