//! `realtime-server`: parse configuration, start, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use realtime_server::config::Cli;
use realtime_server::{Server, dev, request_log, shutdown_signal};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc instead of glibc's malloc: fewer CPU cycles per handshake and per
/// delivery (measured in docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli
        .options
        .merge_file()
        .and_then(|o| o.resolve(dev::random_secret))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("realtime-server: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("{:#}", settings.effective());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(request_log::log_filter(&settings.log)),
        )
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = settings.worker_threads {
        runtime.worker_threads(n);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(settings)),
        Err(e) => {
            eprintln!("realtime-server: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(settings: realtime_server::Settings) -> ExitCode {
    // Before the address is announced: a signal from then on is a graceful stop.
    let stop = shutdown_signal();
    let server = match Server::bind(settings.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("realtime-server: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = server.local_addr();
    if settings.development {
        println!("{}", dev::banner(&settings, addr));
    }
    tracing::info!(%addr, development = settings.development, algorithm = settings.algorithm.as_str(), "listening");
    server.serve(stop).await;
    ExitCode::SUCCESS
}
