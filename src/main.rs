//! proctor's binary: parse the command line, start logging to a file, hand off to `app`.

mod app;

use clap::Parser;
use proctor::cli::exit_code;
use proctor::text_safety;

fn main() {
    let cli = match proctor::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(parse_failure(&e)),
    };
    let (logs, log_guard) = init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "proctor: cannot start the async runtime: {}",
                text_safety::visible_line(&e.to_string())
            );
            std::process::exit(exit_code::FAILED);
        }
    };
    let code = match runtime.block_on(app::run(cli, logs)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "proctor: {}",
                text_safety::visible_line(&one_line(&format!("{e:#}")))
            );
            exit_code::FAILED
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // Flush the log before exiting (exit runs no destructors).
    drop(log_guard);
    std::process::exit(code);
}

/// `--help` and `--version` print to stdout and succeed; every other parse error is bad input:
/// clap's message on stderr (made safe: it quotes what was typed) and the bad-input exit code.
fn parse_failure(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            exit_code::OK
        }
        _ => {
            // `render` without styles: plain text, then every hidden character made visible.
            let text = e.render().to_string();
            eprint!("{}", text_safety::visible(&text));
            exit_code::FAILED
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where this run's log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    /// Written to this file.
    File(std::path::PathBuf),
    /// Off for this run: the file could not be written (the path and why).
    Off(std::path::PathBuf, String),
    /// Off: there is no data dir to put it in.
    NoDataDir,
}

/// Logs go to `DATA_DIR/logs/proctor.log.YYYY-MM-DD` (never to the terminal); `RUST_LOG` sets
/// the level. A data dir that cannot be written (read-only, full, not a directory) turns logging
/// off for the run with one warning on stderr; nothing else changes.
fn init_logging(
    cli: &proctor::cli::Cli,
) -> (
    LogState,
    Option<tracing_appender::non_blocking::WorkerGuard>,
) {
    let Some(data) = cli
        .data_dir
        .clone()
        .or_else(proctor::config::data_dir_default)
    else {
        return (LogState::NoDataDir, None);
    };
    let dir = data.join("logs");
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let day = now.get(..10).unwrap_or("today");
    let path = dir.join(format!("proctor.log.{day}"));
    // A real write, synced: a full disk fails here rather than losing every line silently.
    let opened = (|| -> std::io::Result<std::fs::File> {
        use std::io::Write as _;
        std::fs::create_dir_all(&dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(
            file,
            "{now} proctor {} started (pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        )?;
        file.sync_data()?;
        Ok(file)
    })();
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            let why = e.to_string();
            eprintln!(
                "proctor: warning: logging is off for this run: cannot write {}: {}; `proctor doctor` shows the fix",
                text_safety::visible_line(&path.display().to_string()),
                text_safety::visible_line(&why)
            );
            return (LogState::Off(path, why), None);
        }
    };
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("proctor=info"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    match installed {
        Ok(()) => (LogState::File(path), Some(guard)),
        Err(e) => (LogState::Off(path, e.to_string()), None),
    }
}
