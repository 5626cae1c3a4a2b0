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
use proctor::engine::cost::{DEMO_MODEL, PriceTable};
use proctor::engine::{SessionSetup, start};
use proctor::executor::{
    DockerExecutor, EngineHost, HostSource, doctor_check_on, sweep_orphans_on,
};
use proctor::headless::{self, HeadlessOptions, Outcome};
use proctor::protocol::{Event, EventKind, Op, SessionMode};
use proctor::provider::ChatModel;
use proctor::provider::registry::build_model;
use proctor::provider::scripted::{DEMO_SCRIPT, Script, ScriptedModel};
use proctor::store::{
    EventSink, SessionStore, SessionWriter, StoreError, format_session_table, new_session_id,
};
use proctor::text_safety::visible_line;
use proctor::workspace;

/// `println!` that ignores a closed stdout (`proctor sessions list | head` must not panic), with
/// every hidden character of the text (names, paths, Docker's messages) made visible.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", proctor::text_safety::visible(&text));
    }};
}

/// One line on stderr, made safe: names, ids and reasons from files, sessions and servers never
/// reach the terminal raw.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}",
            proctor::text_safety::visible_line(&text)
        );
    }};
}

/// Prints a workspace note on stderr (before any front end owns the terminal).
fn say(note: String) {
    errln!("proctor: {note}");
}

/// `print!` that ignores a closed stdout; the text goes out exactly (the session table and the
/// Markdown export are made safe where they are built; the JSON export is exact JSON).
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
    /// `--unsaved`: new sessions start even when they cannot be saved.
    unsaved: bool,
    /// Where this run's log goes.
    logs: crate::LogState,
    /// `--docker-host`.
    docker_host: Option<String>,
    /// Theme of the TUI (`--theme`, else config `theme`, else dark).
    theme: String,
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli, logs: crate::LogState) -> anyhow::Result<i32> {
    let ctx = context(&cli, logs)?;
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
        }) => {
            if ctx.unsaved {
                bail!(
                    "--unsaved is for new sessions; resume continues a saved one (and saves what follows)"
                );
            }
            session_resume(&ctx, id, last, front, workspace).await
        }
        Some(Command::Sessions { action }) => sessions(&ctx, action),
        Some(Command::Doctor) => doctor(&ctx).await,
    }
}

fn context(cli: &Cli, logs: crate::LogState) -> anyhow::Result<Context_> {
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
    if let Some(i) = &image {
        config::check_image_ref(i)
            .map_err(|e| anyhow!("--image (or PROCTOR_SANDBOX_IMAGE): {e}"))?;
    }
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
    let theme = cli
        .theme
        .clone()
        .or_else(|| config.theme.clone())
        .unwrap_or_else(|| "dark".to_string());
    Ok(Context_ {
        config,
        config_path,
        data_dir,
        image,
        unsaved: cli.unsaved,
        logs,
        docker_host: cli.docker_host.clone(),
        theme,
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
    team.agents.iter().any(|a| a.model == DEMO_MODEL)
}

fn prices(ctx: &Context_) -> PriceTable {
    PriceTable::from_config(&ctx.config)
}

/// The demo's scripted model is priced like gpt-4o-mini (unless config.toml prices it), so the
/// cost meter shows what such a session would cost. These are demo prices: the transcript, the
/// console and exports mark them (`cost::is_demo_priced`).
fn demo_prices(ctx: &Context_) -> PriceTable {
    let mut config = ctx.config.clone();
    config
        .pricing
        .entry(DEMO_MODEL.into())
        .or_insert(config::PriceConfig {
            input_per_mtok: 0.15,
            output_per_mtok: 0.60,
            cached_input_per_mtok: Some(0.075),
            cache_write_per_mtok: None,
        });
    PriceTable::from_config(&config)
}

/// What the end-of-run messages may claim about saving: `None` while every event is on disk
/// (as of the last fsync), else why not (a failed write, or events not yet synced).
#[derive(Clone, Default)]
struct SaveStatus(Arc<SaveState>);

/// See [`SaveStatus`].
#[derive(Debug, Default)]
struct SaveState {
    /// Why the log is not whole (a failed write).
    problem: std::sync::Mutex<Option<String>>,
    /// Events were handed to the writer since its last sync (they may still be in its queue).
    unsynced: std::sync::atomic::AtomicBool,
}

impl SaveStatus {
    fn set(&self, problem: Option<String>) {
        if let Ok(mut p) = self.0.problem.lock() {
            *p = problem;
        }
    }

    fn mark_unsynced(&self, unsynced: bool) {
        self.0
            .unsynced
            .store(unsynced, std::sync::atomic::Ordering::SeqCst);
    }

    /// Why not every event is on disk; `None` when all are.
    fn problem(&self) -> Option<String> {
        let failed = self.0.problem.lock().ok().and_then(|p| p.clone());
        failed.or_else(|| {
            self.0
                .unsynced
                .load(std::sync::atomic::Ordering::SeqCst)
                .then(|| "its last events were still being written when proctor stopped".into())
        })
    }

    /// Waits (bounded) for the engine's last write: it syncs the log when it ends.
    async fn settle(&self, within: std::time::Duration) {
        let end = tokio::time::Instant::now() + within;
        while self.0.unsynced.load(std::sync::atomic::Ordering::SeqCst)
            && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Records events in the store, creating the session on its first event. If the session
/// cannot be created yet (disk full, permissions), events are kept in memory and creation is
/// retried with each new event, so nothing is lost once saving works again. `status` tells the
/// end-of-run messages whether everything reached the disk.
struct StoreSink {
    store: SessionStore,
    id: String,
    writer: Option<SessionWriter>,
    unsaved: Vec<Event>,
    status: SaveStatus,
}

/// `--unsaved`: nothing is recorded.
struct DiscardSink;

#[async_trait]
impl EventSink for DiscardSink {
    async fn append(&mut self, _event: &Event) -> Result<(), StoreError> {
        Ok(())
    }
    async fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
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

impl StoreSink {
    async fn append_inner(&mut self, event: &Event) -> Result<(), StoreError> {
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

    /// Records what an append or sync says about the disk: an fsynced success means everything
    /// so far is on disk; any failure means something is not.
    fn note(&self, result: &Result<(), StoreError>, synced: bool) {
        match result {
            Err(e) => self.status.set(Some(e.to_string())),
            Ok(()) if synced => self.status.set(None),
            Ok(()) => {}
        }
        self.status.mark_unsynced(!synced || result.is_err());
    }
}

#[async_trait]
impl EventSink for StoreSink {
    async fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        let result = self.append_inner(event).await;
        self.note(&result, event.kind.needs_sync());
        result
    }
    async fn sync(&mut self) -> Result<(), StoreError> {
        let result = match &mut self.writer {
            Some(w) => w.sync().await,
            None => Err(StoreError::Io(format!(
                "session {} could not be created; {} events are only in memory",
                self.id,
                self.unsaved.len()
            ))),
        };
        self.note(&result, true);
        result
    }
}

/// Whether this run gets the TUI: not asked for `--headless`/`--json`, and stdin and stdout are
/// terminals. Falling back says so in one line.
fn wants_tui(front: &FrontEnd) -> bool {
    if front.headless || front.json {
        return false;
    }
    if proctor::tui::available() {
        return true;
    }
    errln!("proctor: stdin or stdout is not a terminal; using the console front end (--headless)");
    false
}

async fn session_new(
    ctx: &Context_,
    team: TeamConfig,
    task: String,
    front: FrontEnd,
    script: Option<Script>,
    ws: workspace::session::Choice,
) -> anyhow::Result<i32> {
    let (models, _) = match build_models(ctx, &team, script.as_ref(), false, &HashMap::new()) {
        Ok(built) => built,
        Err(e) => match no_key_guidance(&e, &team) {
            Some(text) => {
                eprint!("{text}");
                return Ok(1);
            }
            None => return Err(e),
        },
    };
    // A session that cannot be saved does not start (and calls no model) unless asked to.
    if !ctx.unsaved {
        SessionStore::check_writable(&ctx.data_dir).map_err(|e| {
            anyhow!("{e}; or pass --unsaved to run this session without saving it (it cannot be resumed)")
        })?;
    }
    let engine = engine_for(ctx, &team)?;
    check_cpus_fit(&team, &engine).await?;
    let tui = wants_tui(&front);
    let prices = if script.is_some() {
        demo_prices(ctx)
    } else {
        prices(ctx)
    };
    // The tokenizer's first use is slow: load it off the async threads now.
    tokio::task::spawn_blocking(proctor::provider::tokens::warm_up);
    let id = new_session_id();
    let status = SaveStatus::default();
    let executor = Arc::new(DockerExecutor::for_engine(engine.clone()));
    // `--unsaved`: no session directory; the code's workspace is a temporary directory.
    let mut scratch = None;
    let (workspace, workspace_record, sink): (PathBuf, _, Box<dyn EventSink>) = if ctx.unsaved {
        if ws.dir.is_some() || team.executor.workspace.is_some() {
            bail!(
                "--unsaved cannot work on your own directory (its start state could not be kept for \
                 `sessions export --format patch`); drop --unsaved, or drop --workspace"
            );
        }
        status.set(Some("--unsaved: nothing is saved".into()));
        let dir = tempfile::Builder::new()
            .prefix("proctor-unsaved-")
            .tempdir()
            .context("cannot make a temporary workspace for an unsaved session")?;
        let ws = dir.path().join("workspace");
        scratch = Some(dir);
        (ws, None, Box::new(DiscardSink))
    } else {
        let store = SessionStore::open(&ctx.data_dir)?;
        let (ws, record) =
            workspace::session::prepare(&store, &ctx.data_dir, &id, &team.executor, ws, &mut say)?;
        let sink = StoreSink {
            store,
            id: id.clone(),
            writer: None,
            unsaved: Vec::new(),
            status: status.clone(),
        };
        (ws, record, Box::new(sink))
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
        sink,
        resume: None,
        seed: None,
        image_override: ctx.image.clone(),
        workspace_record,
    };
    let code = drive_with(
        setup,
        &front,
        &id,
        engine,
        None,
        &status,
        ctx,
        tui,
        Vec::new(),
    )
    .await;
    drop(scratch);
    code
}

/// What to do when a model of the team needs an API key that is not set: a few lines instead of
/// a dead end (a key, a local server, or the demo right now). `None` for any other error.
fn no_key_guidance(error: &anyhow::Error, team: &TeamConfig) -> Option<String> {
    let proctor::provider::ProviderError::MissingKey { env } =
        error.downcast_ref::<proctor::provider::ProviderError>()?
    else {
        return None;
    };
    let needs: Vec<String> = team
        .agents
        .iter()
        .map(|a| a.model.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Some(format!(
        "proctor: no model to talk to: team {} uses {}, and ${env} is not set. Either\n\
         \x20 - export {env}=your-key (OPENAI_API_KEY for openai/... models, ANTHROPIC_API_KEY for claude/...; see docs/config.md),\n\
         \x20 - run a local model on Ollama or vLLM, no key needed: proctor run --team teams/local-ollama.toml (its header shows the config.toml lines),\n\
         \x20 - or see proctor work right now, no key and no network: proctor demo\n",
        visible_line(&team.name),
        visible_line(&needs.join(", "))
    ))
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
    let tui = wants_tui(&front);
    // Shown at the top of the TUI, or on stderr for the console.
    let mut notes = Vec::new();
    for w in report.warnings() {
        notes.push(format!("session {id}: {w}"));
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
    config::check_recorded_team(&team).map_err(|e| {
        anyhow!("session {id}: the team recorded in its log is invalid ({e}); it cannot be resumed")
    })?;
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
        notes.push(format!(
            "session {id} opens without a model: {p}; agents using it cannot speak until this is fixed"
        ));
    }
    if !tui {
        for n in notes.drain(..) {
            errln!("proctor: {n}");
        }
    }
    let logged_mode = events.iter().fold(SessionMode::Gate, |m, e| match &e.kind {
        EventKind::SessionStarted { mode, .. } | EventKind::ModeChanged { mode } => *mode,
        _ => m,
    });
    let (workspace, workspace_record) =
        workspace::session::reopen(&store, &ctx.data_dir, &id, &events, moved_to, &mut say)?;
    let status = SaveStatus::default();
    let sink = StoreSink {
        store: store.clone(),
        id: id.clone(),
        writer: Some(writer),
        unsaved: Vec::new(),
        status: status.clone(),
    };
    let engine = engine_for(ctx, &team)?;
    let setup = SessionSetup {
        id: id.clone(),
        team,
        task: String::new(),
        mode: logged_mode,
        models,
        executor: Arc::new(DockerExecutor::for_engine(engine.clone())),
        workspace,
        prices: if demo { demo_prices(ctx) } else { prices(ctx) },
        sink: Box::new(sink),
        resume: Some(events),
        seed: None,
        image_override: ctx.image.clone(),
        workspace_record,
    };
    let wanted = (front.approve.is_some() || front.mode.is_some()).then(|| front.session_mode());
    drive_with(
        setup,
        &front,
        &id,
        engine,
        wanted.filter(|m| *m != logged_mode),
        &status,
        ctx,
        tui,
        notes,
    )
    .await
}

/// Docker refuses a CPU quota above its host's CPUs — at the first block, after paid model calls.
/// Checked before a session starts, when Docker answers (when it does not, the first block says
/// so). A quota of one CPU or less fits every host and needs no question.
async fn check_cpus_fit(team: &TeamConfig, engine: &EngineHost) -> anyhow::Result<()> {
    let wanted = team.executor.cpus;
    if wanted <= 1.0 {
        return Ok(());
    }
    let Ok(docker) = proctor::executor::engine_host::connect(engine).await else {
        return Ok(());
    };
    let Ok(Ok(info)) = tokio::time::timeout(std::time::Duration::from_secs(5), docker.info()).await
    else {
        return Ok(());
    };
    match info.ncpu {
        Some(n) if n > 0 && wanted > n as f64 => bail!(
            "team {}: [executor] cpus = {wanted} is more than the {n} CPUs of the Docker host; \
             lower it to {n} or less",
            team.name
        ),
        _ => Ok(()),
    }
}

/// What the last line says about the session's log: saved (only when every event is on disk)
/// and how to continue, or what was not saved.
fn saved_note(id: &str, status: &SaveStatus) -> String {
    match status.problem() {
        None => format!("session {id} saved — `proctor resume {id}` continues it"),
        Some(why) => format!(
            "session {id} is NOT saved completely ({why}); what reached the disk can be resumed with `proctor resume {id}`"
        ),
    }
}

/// The engine a session's sandboxes run on: `--docker-host`, else the team's
/// `[executor] docker_host`, else `DOCKER_HOST`, else the local socket.
fn engine_for(ctx: &Context_, team: &TeamConfig) -> anyhow::Result<EngineHost> {
    Ok(resolve_engine(ctx, team.executor.docker_host.as_deref())?)
}

/// [`EngineHost::resolve`] with what the command line or the team file chose, by precedence.
fn resolve_engine(
    ctx: &Context_,
    team_host: Option<&str>,
) -> Result<EngineHost, proctor::executor::engine_host::EngineHostError> {
    let chosen = match (&ctx.docker_host, team_host) {
        (Some(h), _) => Some((h.as_str(), HostSource::CommandLine)),
        (None, Some(h)) => Some((h, HostSource::TeamFile)),
        (None, None) => None,
    };
    EngineHost::resolve(chosen)
}

#[allow(clippy::too_many_arguments)]
async fn drive_with(
    setup: SessionSetup,
    front: &FrontEnd,
    id: &str,
    engine: EngineHost,
    set_mode: Option<SessionMode>,
    status: &SaveStatus,
    ctx: &Context_,
    tui: bool,
    mut notes: Vec<String>,
) -> anyhow::Result<i32> {
    let executor = setup.executor.clone();
    if engine.is_remote() {
        let where_ = format!("code runs on the Docker engine at {}", engine.describe());
        if tui {
            notes.push(where_);
        } else {
            errln!("proctor: {where_}");
        }
    }
    // Sandboxes left by a proctor that died (this session's too, after a crash): removed in the
    // background, bounded. Containers of running proctors are kept by their owner label.
    let sweep = tokio::spawn(async move {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sweep_orphans_on(&engine, &[]),
        )
        .await;
    });
    let workspace = setup.workspace.clone();
    // The `f` pane's diffs: the start state this session keeps (none when it is not saved; its
    // own directory then starts empty all the same).
    let session_dir =
        (!ctx.unsaved).then(|| SessionStore::for_reading(&ctx.data_dir).session_dir(id));
    let session_start = workspace::session::SessionStart::new(
        id,
        session_dir.as_deref(),
        workspace.clone(),
        setup.workspace_record.as_ref(),
    );
    let handle = start(setup);
    if let Some(mode) = set_mode {
        let _ = handle.ops.send(Op::SetMode { mode });
    }
    if tui {
        let opts = proctor::tui::TuiOptions {
            theme: ctx.theme.clone(),
            no_color: proctor::tui::theme::Theme::no_color_requested(),
            keys: ctx.config.keys.clone(),
            notes,
            workspace: Some(workspace),
            start: Some(session_start),
        };
        let report = proctor::tui::run(handle, opts).await?;
        executor.shutdown(id).await;
        let _ = sweep.await;
        return Ok(tui_exit(id, &report, status));
    }
    let opts = HeadlessOptions {
        json: front.json,
        auto: front.session_mode() == SessionMode::Auto,
        interactive: std::io::IsTerminal::is_terminal(&std::io::stdin()),
    };
    let stdin = BufReader::new(tokio::io::stdin());
    let run = headless::run(handle, opts, stdin, std::io::stdout(), std::io::stderr());
    let outcome = tokio::select! {
        o = run => o,
        sig = shutdown_signal() => {
            // The front end is gone (its future dropped): the engine ends and syncs its log.
            executor.shutdown(id).await;
            status.settle(std::time::Duration::from_secs(5)).await;
            errln!("proctor: {sig}: sandbox removed; {}", saved_note(id, status));
            return Ok(if sig == "SIGINT" {
                proctor::cli::exit_code::SIGINT
            } else {
                proctor::cli::exit_code::SIGTERM
            });
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
        Outcome::Terminated(_) => {
            if let Some(why) = status.problem() {
                errln!("proctor: session {id} ended but is NOT saved completely ({why})");
            }
        }
        Outcome::Paused(why) => {
            errln!("proctor: {}; {}", one_line(why), saved_note(id, status))
        }
        Outcome::InputClosed(why) => {
            errln!(
                "proctor: input ended while {why}; {}",
                saved_note(id, status)
            )
        }
    }
    Ok(outcome.exit_code())
}

/// After the TUI: the session, its cost and how to resume it on stdout; for a non-zero exit the
/// one-line reason on stderr. Returns the exit code.
fn tui_exit(id: &str, report: &proctor::tui::TuiReport, status: &SaveStatus) -> i32 {
    use proctor::tui::TuiOutcome;
    let approx = if report.estimated { "≈" } else { "" };
    let unpriced = if report.unpriced {
        " + unpriced calls"
    } else {
        ""
    };
    let state = match &report.outcome {
        TuiOutcome::Terminated(reason) => {
            format!("ended: {}", proctor::text_safety::excerpt(reason, 200))
        }
        TuiOutcome::Quit(what) => what.clone(),
        TuiOutcome::Signal(sig) => sig.to_string(),
        TuiOutcome::TerminalLost => "the terminal went away".to_string(),
    };
    let state = match (&report.outcome, status.problem()) {
        (TuiOutcome::Terminated(_), _) => state,
        (_, None) => format!("saved ({state})"),
        (_, Some(_)) => format!("NOT saved completely ({state})"),
    };
    outln!(
        "session {id} · cost {approx}${:.4}{unpriced} · {state}",
        report.usd
    );
    outln!("proctor resume {id}");
    let saved = saved_note(id, status);
    match &report.outcome {
        TuiOutcome::Terminated(_) => {
            if let Some(why) = status.problem() {
                errln!("proctor: session {id} ended but is NOT saved completely ({why})");
            }
        }
        TuiOutcome::Quit(what) => errln!("proctor: you quit while {what}; {saved}"),
        TuiOutcome::Signal(sig) => errln!("proctor: {sig}: sandbox removed; {saved}"),
        TuiOutcome::TerminalLost => errln!("proctor: the terminal went away; {saved}"),
    }
    report.outcome.exit_code()
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
    // Listing and exporting only read: they work on a data dir that cannot be written.
    let store = match action {
        SessionsCommand::List | SessionsCommand::Export { .. } => {
            SessionStore::for_reading(&ctx.data_dir)
        }
        SessionsCommand::Fork { .. } | SessionsCommand::Rm { .. } => {
            SessionStore::open(&ctx.data_dir)?
        }
    };
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
            // A read-write workspace is the user's own directory: the fork works in it too.
            if let Ok((events, _)) = store.read(&new) {
                let shared = events.iter().rev().find_map(|e| match &e.kind {
                    EventKind::WorkspaceAttached {
                        path,
                        mode: proctor::protocol::WorkspaceMode::Rw,
                        ..
                    } => Some(path.clone()),
                    _ => None,
                });
                if let Some(path) = shared {
                    errln!(
                        "proctor: note: session {new} works in {path} read-write, like {id}: both change the same files (resume it with --workspace DIR to give it another directory)"
                    );
                }
            }
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
    line(
        "logs",
        match &ctx.logs {
            crate::LogState::File(p) => Ok(format!("written to {}", p.display())),
            crate::LogState::Off(p, why) => Err(format!(
                "off for this run: cannot write {}: {why}; free space on its disk or make {} writable, \
                 or pass --data-dir DIR (or set PROCTOR_DATA_DIR)",
                p.display(),
                p.parent().unwrap_or(p).display()
            )),
            crate::LogState::NoDataDir => {
                Err("off: no data dir; pass --data-dir DIR (or set PROCTOR_DATA_DIR)".into())
            }
        },
    );
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
            Err(e) => line(
                &format!("provider {name}"),
                Err(format!(
                    "{e}; without a key, run a local model (teams/local-ollama.toml) or try `proctor demo`"
                )),
            ),
            ok => line(&format!("provider {name}"), ok),
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
    if let Some(p) = demo_prices(ctx).lookup(DEMO_MODEL) {
        outln!(
            "note  demo: `proctor demo` needs no key and no network; its costs are demo prices (${:.2} in / ${:.2} out per million tokens, nothing billed)",
            p.input_per_mtok,
            p.output_per_mtok
        );
    }
    let image = ctx
        .image
        .clone()
        .or_else(|| default_team(ctx).ok().map(|t| t.executor.image))
        .unwrap_or_else(|| config::DEFAULT_IMAGE.to_string());
    let team_host = default_team(ctx).ok().and_then(|t| t.executor.docker_host);
    let engine = resolve_engine(ctx, team_host.as_deref());
    for (name, r) in doctor_check_on(engine, &image).await {
        line(&name, r);
    }
    use proctor::cli::exit_code;
    Ok(if failures == 0 {
        exit_code::OK
    } else {
        exit_code::FAILED
    })
}

/// Whether new sessions can be saved in `dir` (a real write, synced: a full disk fails too).
fn check_data_dir(dir: &Path) -> Result<String, String> {
    SessionStore::check_writable(dir).map_err(|e| {
        format!("{e}; until then `run` and `demo` refuse to start (or run with --unsaved)")
    })?;
    Ok(format!("{} is writable", dir.display()))
}
