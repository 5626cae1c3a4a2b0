//! proctor's binary: parse the command line, start logging to a file, hand off to `app`.

mod app;

use clap::Parser;

fn main() {
    let cli = proctor::cli::Cli::parse();
    let _log_guard = init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proctor: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(app::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("proctor: {}", one_line(&format!("{e:#}")));
            1
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Logs go to `DATA_DIR/logs/proctor.log.*` (never to the terminal); `RUST_LOG` sets the level.
fn init_logging(cli: &proctor::cli::Cli) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = cli
        .data_dir
        .clone()
        .or_else(proctor::config::data_dir_default)?
        .join("logs");
    std::fs::create_dir_all(&dir).ok()?;
    let appender = tracing_appender::rolling::daily(dir, "proctor.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("proctor=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}
