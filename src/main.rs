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
    let _log_guard = init_logging(&cli);
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
    let code = match runtime.block_on(app::run(cli)) {
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
