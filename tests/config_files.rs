//! Config and team files on disk: every fixture in tests/valid_configs loads, every fixture in
//! tests/invalid_configs fails with a message naming the file, the line and the field, and every
//! team shipped in teams/ validates.
//!
//! An invalid fixture states what its error must say on line 1:
//! `# expect: line N, FIELD, SUBSTRING, ...` (comma-separated; `line 0` = no line known).

use std::path::{Path, PathBuf};

use proctor::config::{
    self, Config, ConfigError, TeamConfig, load_config, load_team, parse_config, validate_team,
};

/// The config invalid and valid teams are validated against: built-ins plus a local Ollama.
const TEST_CONFIG: &str = r#"
[providers.ollama]
kind = "openai"
base_url = "http://localhost:11434/v1"
free = true
"#;

fn test_config() -> Config {
    parse_config(Path::new("test-config.toml"), TEST_CONFIG).expect("test config parses")
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn is_team(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.starts_with("team_") {
        true
    } else if name.starts_with("config_") {
        false
    } else {
        panic!("fixture {name} must start with team_ or config_")
    }
}

/// Loads a fixture the way the app does: config files alone, team files checked against a config.
fn load(path: &Path) -> Result<(), ConfigError> {
    if is_team(path) {
        let team = load_team(path)?;
        let text = std::fs::read_to_string(path).expect("read fixture");
        validate_team(&team, path, &text, &test_config())
    } else {
        load_config(path).map(|_| ())
    }
}

#[test]
fn every_valid_fixture_loads() {
    let files = fixtures("tests/valid_configs");
    assert!(files.len() >= 6, "too few valid fixtures: {files:?}");
    for path in files {
        if let Err(e) = load(&path) {
            panic!("{} should load, got: {e}", path.display());
        }
    }
}

#[test]
fn every_invalid_fixture_fails_naming_file_line_and_field() {
    let files = fixtures("tests/invalid_configs");
    assert!(files.len() >= 30, "too few invalid fixtures: {files:?}");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| check_invalid_fixture(path).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} fixture(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Loads one invalid fixture and compares its error with the fixture's `# expect:` line.
fn check_invalid_fixture(path: &Path) -> Result<(), String> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    let text = std::fs::read_to_string(path).expect("read fixture");
    let first = text.lines().next().unwrap_or_default();
    let spec = first
        .strip_prefix("# expect:")
        .ok_or_else(|| format!("{file_name}: line 1 must be `# expect: line N, FIELD, ...`"))?;
    let mut parts = spec.split(',').map(str::trim);
    let line: usize = parts
        .next()
        .and_then(|p| p.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{file_name}: expect must start with `line N`"))?;
    let wanted: Vec<&str> = parts.collect();
    let Some((want_field, want_text)) = wanted.split_first() else {
        return Err(format!("{file_name}: expect names no field"));
    };

    let err = match load(path) {
        Ok(()) => return Err(format!("{file_name}: loaded, but should fail")),
        Err(e) => e,
    };
    let shown = err.to_string();
    if !shown.contains(&format!("{file_name}:{line}: {want_field}: ")) {
        return Err(format!(
            "{file_name}: wanted `{file_name}:{line}: {want_field}: `, got: {shown}"
        ));
    }
    let ConfigError::Invalid {
        line: got_line,
        field,
        ..
    } = &err
    else {
        return Err(format!(
            "{file_name}: wanted an Invalid error, got: {shown}"
        ));
    };
    if *got_line != line || field != want_field {
        return Err(format!(
            "{file_name}: error fields are line {got_line}, field {field}"
        ));
    }
    match want_text.iter().find(|w| !shown.contains(**w)) {
        Some(missing) => Err(format!("{file_name}: message lacks {missing:?}: {shown}")),
        None => Ok(()),
    }
}

#[test]
fn a_key_pasted_into_api_key_env_is_never_echoed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/invalid_configs/config_api_key_as_env_name.toml");
    let err = load_config(&path).expect_err("key-like api_key_env is refused");
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("sk-proj"),
        "the key leaked into the error: {shown}"
    );
    assert!(
        !shown.contains("abcdefghijkl"),
        "the key leaked into the error: {shown}"
    );
}

fn shipped_teams() -> Vec<PathBuf> {
    fixtures("teams")
}

#[test]
fn every_shipped_team_validates_against_builtin_providers_plus_ollama() {
    let teams = shipped_teams();
    let names: Vec<String> = teams
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(String::from))
        .collect();
    for expected in ["default", "demo", "pair", "squad", "local-ollama"] {
        assert!(
            names.iter().any(|n| n == expected),
            "teams/{expected}.toml missing: {names:?}"
        );
    }
    let config = test_config();
    for path in teams {
        if let Err(e) = config::load_team_checked(&path, &config) {
            panic!("{} should validate, got: {e}", path.display());
        }
    }
}

#[test]
fn local_ollama_team_needs_the_ollama_provider_from_its_comments() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("teams/local-ollama.toml");
    let err = config::load_team_checked(&path, &Config::default())
        .expect_err("without [providers.ollama] the team is refused");
    assert!(
        err.to_string().contains("unknown provider \"ollama\""),
        "{err}"
    );

    // The snippet in the team file's comments (up to the first empty comment line) makes it work.
    let text = std::fs::read_to_string(&path).expect("read team");
    let snippet: String = text
        .lines()
        .skip_while(|l| !l.contains("[providers.ollama]"))
        .take_while(|l| l.starts_with('#') && !l.trim_start_matches('#').trim().is_empty())
        .map(|l| l.trim_start_matches('#').trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        snippet.contains("base_url = \"http://localhost:11434/v1\""),
        "{snippet}"
    );
    let config = parse_config(Path::new("config.toml"), &snippet).expect("snippet parses");
    let team: TeamConfig = config::load_team_checked(&path, &config).expect("validates");
    assert!(config.free_providers().contains(&"ollama".to_string()));
    assert!(team.agents.iter().all(|a| a.model.starts_with("ollama/")));
}

#[test]
fn embedded_teams_equal_the_files_in_teams() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("teams");
    assert_eq!(
        config::default_team(),
        load_team(&dir.join("default.toml")).expect("default")
    );
    assert_eq!(
        config::demo_team(),
        load_team(&dir.join("demo.toml")).expect("demo")
    );
}

#[test]
fn every_theme_has_every_semantic_role_and_a_syntect_theme() {
    let named = [
        "reset",
        "black",
        "red",
        "green",
        "yellow",
        "blue",
        "magenta",
        "cyan",
        "gray",
        "darkgray",
        "lightred",
        "lightgreen",
        "lightyellow",
        "lightblue",
        "lightmagenta",
        "lightcyan",
        "white",
    ];
    let is_colour = |c: &str| {
        named.contains(&c)
            || (c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|h| h.is_ascii_hexdigit()))
            || c.parse::<u8>().is_ok()
    };
    let files = fixtures("themes");
    let stems: Vec<_> = files
        .iter()
        .filter_map(|p| p.file_stem()?.to_str())
        .collect();
    assert_eq!(stems, ["dark", "high-contrast", "light"]);
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read theme");
        let theme: toml::Table = toml::from_str(&text).expect("theme is TOML");
        let shown = path.display();
        assert_eq!(
            theme["name"].as_str(),
            path.file_stem().and_then(|s| s.to_str()),
            "{shown}"
        );
        assert!(
            theme["syntect_theme"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{shown}"
        );
        let palette = theme["palette"].as_table().expect("[palette]");
        let agents = palette["agents"].as_array().expect("agents list");
        assert!(agents.len() >= 4, "{shown}: too few agent colours");
        for role in [
            "fg", "bg", "danger", "warning", "success", "muted", "accent", "border", "code_bg",
        ] {
            let colour = palette.get(role).and_then(|v| v.as_str());
            assert!(
                colour.is_some_and(is_colour),
                "{shown}: palette.{role} = {colour:?}"
            );
        }
        for c in agents {
            assert!(
                c.as_str().is_some_and(is_colour),
                "{shown}: agent colour {c}"
            );
        }
    }
}

/// Field names of a serialized struct (every field is present: `None` serializes as `null`).
fn field_names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_object()
        .expect("a struct")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_field_is_documented_in_docs_config_md() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md"))
        .expect("docs/config.md");
    let team = serde_json::to_value(config::default_team()).expect("team to json");
    let mut fields = field_names(&team);
    fields.extend(field_names(&team["agents"][0]));
    for section in ["orchestration", "termination", "budget", "executor"] {
        fields.extend(field_names(&team[section]));
    }
    let providers = serde_json::to_value(config::builtin_providers()).expect("providers to json");
    fields.extend(field_names(&providers["openai"]));
    let price = config::PriceConfig {
        input_per_mtok: 1.0,
        output_per_mtok: 1.0,
        cached_input_per_mtok: None,
        cache_write_per_mtok: None,
    };
    fields.extend(field_names(
        &serde_json::to_value(price).expect("price to json"),
    ));
    fields.extend(field_names(
        &serde_json::to_value(Config::default()).expect("config to json"),
    ));
    assert!(fields.len() > 40, "{fields:?}");
    let missing: Vec<_> = fields
        .iter()
        .filter(|f| !doc.contains(&format!("| `{f}` |")) && !doc.contains(&format!("### `[{f}]`")))
        .collect();
    assert!(
        missing.is_empty(),
        "fields without a row in docs/config.md: {missing:?}"
    );
}
