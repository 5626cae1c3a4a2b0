//! The binary's edge: turns a parsed command line into a running session (config, team, models,
//! sandbox, store, front end) or a sessions/doctor command, and maps the outcome to an exit code.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use tokio::io::BufReader;

use proctor::cli::{Cli, Command, ExportFormat, FrontEnd, SessionsCommand};
use proctor::config::{self, Config, ProviderKind, TeamConfig};
use proctor::engine::cost::PriceTable;
use proctor::engine::{SessionSetup, start};
use proctor::executor::{DockerExecutor, doctor_check, sweep_orphans};
use proctor::headless::{self, HeadlessOptions, Outcome};
use proctor::protocol::{Event, EventKind, Op, SessionMode};
use proctor::provider::ChatModel;
use proctor::provider::registry::build_model;
use proctor::provider::scripted::{DEMO_SCRIPT, Script, ScriptedModel};
use proctor::store::{
    EventSink, SessionStore, SessionWriter, StoreError, format_session_table, new_session_id,
};
use proctor::workspace;

/// Prints a workspace note on stderr (before any front end owns the terminal).
fn say(note: String) {
    eprintln!("proctor: {note}");
}

/// `println!` that ignores a closed stdout (`proctor sessions list | head` must not panic).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Everything resolved from global options.
struct Context_ {
    config: Config,
    config_path: Option<PathBuf>,
    data_dir: PathBuf,
    image: Option<String>,
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let ctx = context(&cli)?;
    match cli.command {
        None => {
            let team = default_team(&ctx)?;
            let ws = workspace::session::Choice::default();
            session_new(&ctx, team, String::new(), FrontEnd::default(), None, ws).await
        }
        Some(Command::Demo { front }) => {
            let script = Script::parse(DEMO_SCRIPT)
                .map_err(|e| anyhow!("the built-in demo script is broken: {e}"))?;
            let task = script.task.clone().unwrap_or_default();
            let ws = workspace::session::Choice::default();
            session_new(&ctx, config::demo_team(), task, front, Some(script), ws).await
        }
        Some(Command::Run {
            team,
            task,
            workspace,
            workspace_mode,
            front,
        }) => {
            let team = match team {
                Some(path) => config::load_team_checked(&path, &ctx.config)?,
                None => default_team(&ctx)?,
            };
            if front.headless && task.as_deref().is_none_or(|t| t.trim().is_empty()) && front.json {
                bail!("--headless --json needs the task: add --task \"...\"");
            }
            let ws = workspace::session::Choice {
                dir: workspace,
                mode: workspace_mode.map(Into::into),
            };
            session_new(&ctx, team, task.unwrap_or_default(), front, None, ws).await
        }
        Some(Command::Resume {
            id,
            last,
            workspace,
            front,
        }) => session_resume(&ctx, id, last, front, workspace).await,
        Some(Command::Sessions { action }) => sessions(&ctx, action),
        Some(Command::Doctor) => doctor(&ctx).await,
    }
}

fn context(cli: &Cli) -> anyhow::Result<Context_> {
    let config_path = cli.config.clone().or_else(config::config_path_default);
    let config = match &cli.config {
        // An explicit --config must exist.
        Some(path) if !path.exists() => {
            bail!(
                "config file {} does not exist (check --config)",
                path.display()
            )
        }
        _ => match &config_path {
            Some(p) => config::load_config(p)?,
            None => Config::default(),
        },
    };
    let data_dir = match &cli.data_dir {
        Some(d) => d.clone(),
        None => config::data_dir_default().ok_or_else(|| {
            anyhow!("cannot find a data directory: pass --data-dir DIR or set PROCTOR_DATA_DIR")
        })?,
    };
    let image = cli.image.clone().filter(|i| !i.trim().is_empty());
    let theme_source = match (&cli.theme, &config.theme) {
        (Some(t), _) => Some((t, "--theme".to_string())),
        (None, Some(t)) => Some((
            t,
            format!(
                "theme in {}",
                config_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        )),
        (None, None) => None,
    };
    if let Some((theme, from)) = theme_source
        && !config::THEMES.contains(&theme.as_str())
    {
        bail!(
            "{from}: unknown theme {theme:?}; use one of {}",
            config::THEMES.join(", ")
        );
    }
    Ok(Context_ {
        config,
        config_path,
        data_dir,
        image,
    })
}

fn default_team(ctx: &Context_) -> anyhow::Result<TeamConfig> {
    if let Some(cfg) = &ctx.config_path
        && let Some(path) = ctx.config.default_team_path(cfg)
    {
        return Ok(config::load_team_checked(&path, &ctx.config)?);
    }
    Ok(config::default_team())
}

/// Models by `provider/model`.
type Models = HashMap<String, Arc<dyn ChatModel>>;

/// Builds a model for every model ref the team uses. With `lenient`, failures are collected
/// instead of fatal (resume opens the session even when a key is gone).
fn build_models(
    ctx: &Context_,
    team: &TeamConfig,
    script: Option<&Script>,
    lenient: bool,
    consumed: &HashMap<String, usize>,
) -> anyhow::Result<(Models, Vec<String>)> {
    let mut refs: BTreeSet<String> = team.agents.iter().map(|a| a.model.clone()).collect();
    if let Some(sel) = &team.orchestration.selector_model {
        refs.insert(sel.clone());
    }
    let providers = ctx.config.effective_providers();
    let mut models: HashMap<String, Arc<dyn ChatModel>> = HashMap::new();
    let mut problems = Vec::new();
    let mut scripted: HashMap<String, ScriptedModel> = HashMap::new();
    for model_ref in refs {
        let built: anyhow::Result<Arc<dyn ChatModel>> = (|| {
            let (provider_name, model) = proctor::provider::split_model_ref(&model_ref)?;
            let provider = providers.get(provider_name).ok_or_else(|| {
                anyhow!("model {model_ref}: no provider {provider_name:?} (add [providers.{provider_name}] to config.toml)")
            })?;
            if provider.kind == ProviderKind::Scripted {
                // All scripted refs share one script so replies keep their order across agents.
                let key = provider
                    .script
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if let Some(m) = scripted.get(&key) {
                    return Ok(Arc::new(m.renamed(&model_ref)) as Arc<dyn ChatModel>);
                }
                let replies = match (&provider.script, script) {
                    (Some(path), _) => {
                        let text = std::fs::read_to_string(path).with_context(|| {
                            format!(
                                "cannot read the script {} of [providers.{provider_name}]",
                                path.display()
                            )
                        })?;
                        Script::parse(&text)
                            .map_err(|e| anyhow!("{}: {e}", path.display()))?
                            .reply
                    }
                    (None, Some(s)) => s.reply.clone(),
                    (None, None) => {
                        bail!(
                            "model {model_ref}: the scripted provider needs `script = \"FILE\"` in [providers.{provider_name}]"
                        )
                    }
                };
                // A resumed session continues the script after the replies it already used.
                let m = ScriptedModel::new(&model_ref, skip_consumed(replies, consumed));
                scripted.insert(key, m.clone());
                let _ = model;
                return Ok(Arc::new(m) as Arc<dyn ChatModel>);
            }
            Ok(build_model(provider_name, provider, model)?)
        })();
        match built {
            Ok(m) => {
                models.insert(model_ref, m);
            }
            Err(e) if lenient => problems.push(format!("{e:#}")),
            Err(e) => return Err(e),
        }
    }
    Ok((models, problems))
}

/// Drops the replies a session already received: per agent label, that many of its own
/// replies, then untagged ones.
fn skip_consumed(
    mut replies: Vec<proctor::provider::scripted::ScriptedReply>,
    consumed: &HashMap<String, usize>,
) -> Vec<proctor::provider::scripted::ScriptedReply> {
    for (agent, n) in consumed {
        let mut left = *n;
        replies.retain(|r| {
            if left > 0 && r.agent.as_deref() == Some(agent.as_str()) {
                left -= 1;
                false
            } else {
                true
            }
        });
        replies.retain(|r| {
            if left > 0 && r.agent.is_none() {
                left -= 1;
                false
            } else {
                true
            }
        });
    }
    replies
}

/// Replies each agent (and the selector) received in a saved session: an agent's reply counts
/// once its message is recorded (fsynced), the selector's once its usage is.
fn calls_made(events: &[Event]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for e in events {
        match &e.kind {
            EventKind::Message { agent, .. }
                if agent != proctor::protocol::HUMAN && agent != proctor::protocol::EXECUTOR =>
            {
                *n.entry(agent.clone()).or_insert(0) += 1;
            }
            EventKind::Usage { agent, .. } if agent == "selector" => {
                *n.entry(agent.clone()).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    n
}

/// Whether a team runs on the built-in demo model (its script and prices come with proctor).
fn is_demo_team(team: &TeamConfig) -> bool {
    team.agents.iter().any(|a| a.model == "scripted/demo")
}

fn prices(ctx: &Context_) -> PriceTable {
    PriceTable::from_config(&ctx.config)
}

/// The demo's scripted model is priced like gpt-4o-mini (unless config.toml prices it), so the
/// cost meter shows what such a session would cost.
fn demo_prices(ctx: &Context_) -> PriceTable {
    let mut config = ctx.config.clone();
    config
        .pricing
        .entry("scripted/demo".into())
        .or_insert(config::PriceConfig {
            input_per_mtok: 0.15,
            output_per_mtok: 0.60,
            cached_input_per_mtok: Some(0.075),
            cache_write_per_mtok: None,
        });
    PriceTable::from_config(&config)
}

/// Records events in the store, creating the session on its first event. If the session
/// cannot be created yet (disk full, permissions), events are kept in memory and creation is
/// retried with each new event, so nothing is lost once saving works again.
struct StoreSink {
    store: SessionStore,
    id: String,
    writer: Option<SessionWriter>,
    unsaved: Vec<Event>,
}

impl StoreSink {
    fn writer(&mut self) -> Result<&mut SessionWriter, StoreError> {
        if self.writer.is_none() {
            let Some(first) = self.unsaved.first() else {
                return Err(StoreError::Io(
                    "no session_started event to begin the log with".into(),
                ));
            };
            // A failed earlier attempt may have left a log: start it over. The rest of the
            // directory (a copied workspace, the start state) was prepared for this session.
            let _ = std::fs::remove_file(self.store.log_path(&self.id));
            let w = self.store.create(&self.id, first)?;
            self.writer = Some(w);
            self.unsaved.remove(0);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| StoreError::Io("session writer unavailable".into()))
    }
}

#[async_trait]
impl EventSink for StoreSink {
    async fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        if self.writer.is_some() && self.unsaved.is_empty() {
            return self.writer()?.append(event).await;
        }
        // Not created yet: keep the event, try to create, then write the backlog in order.
        self.unsaved.push(event.clone());
        self.writer()?;
        let mut result = Ok(());
        for ev in std::mem::take(&mut self.unsaved) {
            if let Err(e) = self.writer()?.append(&ev).await {
                result = Err(e);
            }
        }
        result
    }
    async fn sync(&mut self) -> Result<(), StoreError> {
        match &mut self.writer {
            Some(w) => w.sync().await,
            None => Err(StoreError::Io(format!(
                "session {} could not be created; {} events are only in memory",
                self.id,
                self.unsaved.len()
            ))),
        }
    }
}

fn headless_note(front: &FrontEnd) {
    if !front.headless {
        eprintln!(
            "proctor: the full-screen TUI is not in this build yet; using the console front end (--headless)"
        );
    }
}

async fn session_new(
    ctx: &Context_,
    team: TeamConfig,
    task: String,
    front: FrontEnd,
    script: Option<Script>,
    ws: workspace::session::Choice,
) -> anyhow::Result<i32> {
    headless_note(&front);
    let (models, _) = build_models(ctx, &team, script.as_ref(), false, &HashMap::new())?;
    let prices = if script.is_some() {
        demo_prices(ctx)
    } else {
        prices(ctx)
    };
    // The tokenizer's first use is slow: load it off the async threads now.
    tokio::task::spawn_blocking(proctor::provider::tokens::warm_up);
    let store = SessionStore::open(&ctx.data_dir)?;
    let id = new_session_id();
    // Before the workspace is prepared (a copy is no small thing to leave behind).
    let executor = Arc::new(DockerExecutor::new()?);
    let (workspace, workspace_record) =
        workspace::session::prepare(&store, &ctx.data_dir, &id, &team.executor, ws, &mut say)?;
    let sink = StoreSink {
        store,
        id: id.clone(),
        writer: None,
        unsaved: Vec::new(),
    };
    let mode = front.session_mode();
    let setup = SessionSetup {
        id: id.clone(),
        team,
        task,
        mode,
        models,
        executor,
        workspace,
        prices,
        sink: Box::new(sink),
        resume: None,
        seed: None,
        image_override: ctx.image.clone(),
        workspace_record,
    };
    drive(setup, &front, &id).await
}

async fn session_resume(
    ctx: &Context_,
    id: Option<String>,
    last: bool,
    front: FrontEnd,
    moved_to: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let store = SessionStore::open(&ctx.data_dir)?;
    let id = match (id, last) {
        (Some(id), _) => store.resolve(&id)?,
        (None, _) => store
            .resolve_last()?
            .ok_or_else(|| anyhow!("no saved sessions in {}", ctx.data_dir.display()))?,
    };
    let (events, report, writer) = store.open_existing(&id)?;
    headless_note(&front);
    for w in report.warnings() {
        eprintln!("proctor: session {id}: {w}");
    }
    let team = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::SessionStarted {
                team_config: Some(t),
                ..
            } => Some((**t).clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow!("session {id} has no team recorded; it cannot be resumed"))?;
    let demo = is_demo_team(&team);
    let demo_script = if demo {
        Some(
            Script::parse(DEMO_SCRIPT)
                .map_err(|e| anyhow!("the built-in demo script is broken: {e}"))?,
        )
    } else {
        None
    };
    let (models, problems) =
        build_models(ctx, &team, demo_script.as_ref(), true, &calls_made(&events))?;
    for p in &problems {
        eprintln!(
            "proctor: session {id} opens without a model: {p}; agents using it cannot speak until this is fixed"
        );
    }
    let logged_mode = events.iter().fold(SessionMode::Gate, |m, e| match &e.kind {
        EventKind::SessionStarted { mode, .. } | EventKind::ModeChanged { mode } => *mode,
        _ => m,
    });
    let (workspace, workspace_record) =
        workspace::session::reopen(&store, &ctx.data_dir, &id, &events, moved_to, &mut say)?;
    let setup = SessionSetup {
        id: id.clone(),
        team,
        task: String::new(),
        mode: logged_mode,
        models,
        executor: Arc::new(DockerExecutor::new()?),
        workspace,
        prices: if demo { demo_prices(ctx) } else { prices(ctx) },
        sink: Box::new(writer),
        resume: Some(events),
        seed: None,
        image_override: ctx.image.clone(),
        workspace_record,
    };
    let wanted = (front.approve.is_some() || front.mode.is_some()).then(|| front.session_mode());
    drive_with(setup, &front, &id, wanted.filter(|m| *m != logged_mode)).await
}

async fn drive(setup: SessionSetup, front: &FrontEnd, id: &str) -> anyhow::Result<i32> {
    drive_with(setup, front, id, None).await
}

async fn drive_with(
    setup: SessionSetup,
    front: &FrontEnd,
    id: &str,
    set_mode: Option<SessionMode>,
) -> anyhow::Result<i32> {
    let executor = setup.executor.clone();
    // Sandboxes left by a proctor that died (this session's too, after a crash): removed in the
    // background, bounded. Containers of running proctors are kept by their owner label.
    let sweep = tokio::spawn(async move {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sweep_orphans(&[])).await;
    });
    let handle = start(setup);
    if let Some(mode) = set_mode {
        let _ = handle.ops.send(Op::SetMode { mode });
    }
    let opts = HeadlessOptions {
        json: front.json,
        auto: front.session_mode() == SessionMode::Auto,
    };
    let stdin = BufReader::new(tokio::io::stdin());
    let run = headless::run(handle, opts, stdin, std::io::stdout(), std::io::stderr());
    let outcome = tokio::select! {
        o = run => o,
        sig = shutdown_signal() => {
            executor.shutdown(id).await;
            eprintln!("proctor: {sig}: sandbox removed; session {id} saved — `proctor resume {id}` continues it");
            return Ok(if sig == "SIGINT" { 130 } else { 143 });
        }
    };
    executor.shutdown(id).await;
    // The sweep is bounded; let it finish so a crashed run's sandbox never outlives us.
    let _ = sweep.await;
    // One line on stderr, however long or multi-line the reason.
    let one_line = |s: &str| {
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > 400 {
            s.chars().take(400).collect::<String>() + "…"
        } else {
            s
        }
    };
    match &outcome {
        Outcome::Terminated(_) => {}
        Outcome::Paused(why) => {
            eprintln!(
                "proctor: {}; session {id} saved — `proctor resume {id}` continues it",
                one_line(why)
            )
        }
        Outcome::InputClosed(why) => {
            eprintln!(
                "proctor: input ended while {why}; session {id} saved — `proctor resume {id}` continues it"
            )
        }
    }
    Ok(outcome.exit_code())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn sessions(ctx: &Context_, action: SessionsCommand) -> anyhow::Result<i32> {
    let store = SessionStore::open(&ctx.data_dir)?;
    match action {
        SessionsCommand::List => {
            let list = store.list()?;
            if list.is_empty() {
                outln!("no saved sessions in {}", store.root().display());
            } else {
                out!("{}", format_session_table(&list));
            }
        }
        SessionsCommand::Export { id, format } => {
            let id = store.resolve(&id)?;
            let text = match format {
                ExportFormat::Md => store.export_md(&id)?,
                ExportFormat::Json => store.export_json(&id)?,
                ExportFormat::Patch => workspace::session::patch(&store, &id)?,
            };
            out!("{text}");
        }
        SessionsCommand::Fork { id, at } => {
            let id = store.resolve(&id)?;
            let new = store.fork(&id, at)?;
            outln!("{new}");
        }
        SessionsCommand::Rm { id } => {
            let id = store.resolve(&id)?;
            store.remove(&id)?;
            outln!("removed session {id}");
        }
    }
    Ok(0)
}

async fn doctor(ctx: &Context_) -> anyhow::Result<i32> {
    let mut failures = 0;
    let mut line = |name: &str, r: Result<String, String>| match r {
        Ok(detail) => outln!("ok    {name}: {detail}"),
        Err(fix) => {
            failures += 1;
            outln!("FAIL  {name}: {fix}");
        }
    };
    line(
        "config",
        Ok(match &ctx.config_path {
            Some(p) if p.exists() => format!("{} is valid", p.display()),
            Some(p) => format!("{} not found; using defaults", p.display()),
            None => "no config dir; using defaults".into(),
        }),
    );
    line("data dir", check_data_dir(&ctx.data_dir));
    let team = default_team(ctx).ok();
    for (name, r) in workspace::session::doctor(&ctx.data_dir, team.as_ref()) {
        line(&name, r);
    }
    for (name, p) in ctx.config.effective_providers() {
        if p.kind == ProviderKind::Scripted {
            continue;
        }
        let r = match &p.api_key_env {
            None => Ok("no key needed".to_string()),
            Some(env) => match std::env::var(env) {
                Ok(v) if !v.trim().is_empty() => Ok(format!("key found in ${env}")),
                _ => Err(format!(
                    "${env} is not set: export {env}=... to use models of [providers.{name}]"
                )),
            },
        };
        // A provider without its key is only a problem if the default team uses it.
        let needed = default_team(ctx)
            .map(|t| {
                t.agents
                    .iter()
                    .any(|a| a.model.starts_with(&format!("{name}/")))
            })
            .unwrap_or(false);
        match r {
            Err(e) if !needed => outln!("note  provider {name}: {e}"),
            r => line(&format!("provider {name}"), r),
        }
    }
    if let Ok(team) = default_team(ctx) {
        let table = prices(ctx);
        let unpriced: Vec<String> = team
            .agents
            .iter()
            .map(|a| a.model.clone())
            .filter(|m| table.lookup(m).is_none())
            .collect();
        line(
            "pricing",
            if unpriced.is_empty() {
                Ok("every model of the default team has a price".into())
            } else {
                Err(format!(
                    "no price for {}: add [pricing.\"MODEL\"] to config.toml (costs show as unpriced)",
                    unpriced.join(", ")
                ))
            },
        );
    }
    let image = ctx
        .image
        .clone()
        .or_else(|| default_team(ctx).ok().map(|t| t.executor.image))
        .unwrap_or_else(|| config::DEFAULT_IMAGE.to_string());
    for (name, r) in doctor_check(&image).await {
        line(&name, r);
    }
    Ok(if failures == 0 { 0 } else { 1 })
}

fn check_data_dir(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}; pass --data-dir DIR", dir.display()))?;
    let probe = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
        format!(
            "{} is not writable: {e}; pass --data-dir DIR",
            dir.display()
        )
    })?;
    drop(probe);
    Ok(format!("{} is writable", dir.display()))
}
