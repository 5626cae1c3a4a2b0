//! Themes: the semantic roles widgets style themselves with (agent colours, danger, warning,
//! success, muted, accent, border, code background) and the syntect theme for code, read from the
//! shipped `themes/*.toml`. `NO_COLOR` keeps the roles but draws them with attributes only.

use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// A theme that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// No such theme.
    #[error("unknown theme {0:?}; use one of {list}", list = crate::config::THEMES.join(", "))]
    Unknown(String),
    /// A shipped theme file is broken.
    #[error("theme {name}: {message}")]
    Invalid {
        /// Theme name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    syntect_theme: String,
    palette: PaletteFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaletteFile {
    agents: Vec<String>,
    fg: String,
    bg: String,
    danger: String,
    warning: String,
    success: String,
    muted: String,
    accent: String,
    border: String,
    code_bg: String,
}

/// The theme files shipped with proctor, by name.
const SHIPPED: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

/// Colours and attributes by role.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// Theme name.
    pub name: String,
    /// syntect theme for code; `None` draws code without colours (`NO_COLOR`).
    pub syntect_theme: Option<String>,
    agents: Vec<Color>,
    fg: Color,
    bg: Color,
    danger: Color,
    warning: Color,
    success: Color,
    muted: Color,
    accent: Color,
    border: Color,
    code_bg: Color,
    color: bool,
}

fn parse_color(name: &str, field: &str, value: &str) -> Result<Color, ThemeError> {
    Color::from_str(value).map_err(|_| ThemeError::Invalid {
        name: name.to_string(),
        message: format!(
            "{field} = {value:?} is not a colour (use \"#rrggbb\", a name or an index)"
        ),
    })
}

impl Theme {
    /// The shipped theme `name`; `no_color` draws every role with attributes only.
    pub fn load(name: &str, no_color: bool) -> Result<Theme, ThemeError> {
        let (_, text) = SHIPPED
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ThemeError::Unknown(name.to_string()))?;
        let file: ThemeFile = toml::from_str(text).map_err(|e| ThemeError::Invalid {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        let p = &file.palette;
        let c = |field: &str, v: &str| parse_color(name, field, v);
        let agents = p
            .agents
            .iter()
            .map(|a| c("agents", a))
            .collect::<Result<Vec<_>, _>>()?;
        if agents.is_empty() {
            return Err(ThemeError::Invalid {
                name: name.to_string(),
                message: "palette.agents is empty".into(),
            });
        }
        Ok(Theme {
            name: file.name,
            syntect_theme: (!no_color).then_some(file.syntect_theme),
            agents,
            fg: c("fg", &p.fg)?,
            bg: c("bg", &p.bg)?,
            danger: c("danger", &p.danger)?,
            warning: c("warning", &p.warning)?,
            success: c("success", &p.success)?,
            muted: c("muted", &p.muted)?,
            accent: c("accent", &p.accent)?,
            border: c("border", &p.border)?,
            code_bg: c("code_bg", &p.code_bg)?,
            color: !no_color,
        })
    }

    /// Whether `NO_COLOR` asks for no colours (set and not empty, per no-color.org).
    pub fn no_color_requested() -> bool {
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
    }

    /// Whether this theme draws colours.
    pub fn has_color(&self) -> bool {
        self.color
    }

    fn fg_or(&self, c: Color, fallback: Modifier) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new().add_modifier(fallback)
        }
    }

    /// Body text on the screen background.
    pub fn base(&self) -> Style {
        if self.color {
            Style::new().fg(self.fg).bg(self.bg)
        } else {
            Style::new()
        }
    }

    /// An agent's name and marks; `slot` is its roster position (colours cycle).
    pub fn agent(&self, slot: Option<usize>) -> Style {
        match slot {
            Some(i) if self.color => Style::new()
                .fg(self.agents[i % self.agents.len()])
                .add_modifier(Modifier::BOLD),
            _ => self.accent().add_modifier(Modifier::BOLD),
        }
    }

    /// Rejections, errors, a budget crossed, network on.
    pub fn danger(&self) -> Style {
        self.fg_or(self.danger, Modifier::BOLD)
    }

    /// Pending approvals, warnings, truncated output.
    pub fn warning(&self) -> Style {
        self.fg_or(self.warning, Modifier::BOLD)
    }

    /// Approvals, exit code 0.
    pub fn success(&self) -> Style {
        self.fg_or(self.success, Modifier::empty())
    }

    /// Secondary text: token counts, hints, timestamps.
    pub fn muted(&self) -> Style {
        self.fg_or(self.muted, Modifier::DIM)
    }

    /// Focus, key hints, headings.
    pub fn accent(&self) -> Style {
        self.fg_or(self.accent, Modifier::UNDERLINED)
    }

    /// Pane borders.
    pub fn border(&self) -> Style {
        self.fg_or(self.border, Modifier::empty())
    }

    /// The border of the focused pane.
    pub fn focus_border(&self) -> Style {
        self.fg_or(self.accent, Modifier::BOLD)
    }

    /// Code and program output.
    pub fn code(&self) -> Style {
        if self.color {
            Style::new().bg(self.code_bg)
        } else {
            Style::new()
        }
    }

    /// A marker standing for a hidden character (`␛`, `⟨U+202E⟩`).
    pub fn marker(&self) -> Style {
        if self.color {
            Style::new()
                .fg(self.danger)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    /// The selected row of a list.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// A search match.
    pub fn search_match(&self) -> Style {
        if self.color {
            Style::new().fg(Color::Black).bg(self.warning)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::UNDERLINED)
        }
    }

    /// Gauge colour for spending: accent, warning from `warn_at`, danger at the cap.
    pub fn gauge(&self, fraction: f64, warn_at: f64) -> Style {
        if fraction >= 1.0 {
            self.danger()
        } else if fraction >= warn_at {
            self.warning()
        } else {
            self.success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_theme_loads_and_names_a_code_theme_that_exists() {
        let themes = crate::tui::render::highlight::theme_names();
        for name in crate::config::THEMES {
            let t = Theme::load(name, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.name, name);
            let code = t.syntect_theme.clone().unwrap();
            assert!(themes.contains(&code), "{name}: no syntect theme {code:?}");
            assert_ne!(t.danger(), t.success());
        }
        assert!(matches!(
            Theme::load("neon", false),
            Err(ThemeError::Unknown(_))
        ));
    }

    #[test]
    fn no_color_keeps_roles_apart_with_attributes_only() {
        let t = Theme::load("dark", true).unwrap();
        assert!(t.syntect_theme.is_none());
        for s in [
            t.danger(),
            t.warning(),
            t.muted(),
            t.accent(),
            t.marker(),
            t.agent(Some(0)),
        ] {
            assert_eq!(s.fg, None);
            assert_eq!(s.bg, None);
        }
        assert_ne!(t.muted(), t.danger());
    }
}
