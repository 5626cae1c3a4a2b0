//! The transcript on screen: each cell laid out for the current width only when it becomes
//! visible, cached per (width, revision), its height kept in a prefix-sum index; a frame renders
//! the visible slice only, so its cost does not grow with the transcript. A resize re-estimates
//! heights (O(1) per cell, no wrapping) and lays out again only what becomes visible.
//!
//! Scrolling keeps a top anchor (cell, line within it), so what is on screen stays put while cells
//! above it grow or reflow; following the tail stops when the human scrolls up and counts the
//! cells that arrive meanwhile ("↓ N new").

pub mod cell;
pub mod height;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use ratatui::style::Style;
use ratatui::text::{Line, Span};

use self::cell::{CellContext, exec_header, message_header, render_cell};
use self::height::HeightIndex;
use crate::tui::model::{CellKind, SessionView};
use crate::tui::render::markdown::{MdContext, Rendered, append_group, split_stable};

/// Cached lines kept before the least recently used cells are dropped.
const MAX_CACHED_LINES: usize = 40_000;

struct Layout {
    rev: u64,
    width: usize,
    style_gen: u64,
    /// Highlighter generation when some code was shown plain (re-render once it changes).
    hl_gen: Option<u64>,
    lines: Vec<Line<'static>>,
    used: u64,
}

/// The complete groups of a (streaming) message, rendered once.
struct MessageGroups {
    width: usize,
    style_gen: u64,
    hl_gen: Option<u64>,
    end: usize,
    hash: u64,
    rendered: Rendered,
}

fn hash_str(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// The transcript's layout and scroll state.
pub struct Transcript {
    width: usize,
    heights: HeightIndex,
    /// What each cell's height estimate depends on.
    estimates: Vec<Estimate>,
    cache: HashMap<usize, Layout>,
    groups: HashMap<usize, MessageGroups>,
    cached_lines: usize,
    tick: u64,
    follow: bool,
    top: (usize, usize),
    unseen: usize,
    viewport: usize,
    style_gen: u64,
    query: Option<String>,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript {
            width: 80,
            heights: HeightIndex::default(),
            estimates: Vec::new(),
            cache: HashMap::new(),
            groups: HashMap::new(),
            cached_lines: 0,
            tick: 0,
            follow: true,
            top: (0, 0),
            unseen: 0,
            viewport: 1,
            style_gen: 0,
            query: None,
        }
    }
}

/// What a cell's height estimate depends on, kept per cell so that a resize re-estimates every
/// height from a small array (no walk over the cells themselves).
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Lines whatever the width.
    fixed: u32,
    /// Bytes of text that wrap with the width.
    text: u32,
}

impl Estimate {
    /// What `kind`'s estimate depends on (O(1)).
    fn of(kind: &CellKind) -> Estimate {
        let text = kind.text_len();
        let (fixed, text, message) = match kind {
            CellKind::Message { .. } => (2, text, true),
            CellKind::Execution(x) => {
                let out = x.output_lines.min(cell::FOLD_HEAD + cell::FOLD_TAIL + 1);
                (
                    2 + out + x.changes.as_ref().map_or(0, |c| c.len()),
                    0,
                    false,
                )
            }
            CellKind::Approval { blocks, .. } => (1 + blocks.len(), 0, false),
            CellKind::ExecutorReport { .. } => (2, 0, false),
            CellKind::SessionStart { .. }
            | CellKind::SpeakerNote { .. }
            | CellKind::SpeakerRequested { .. }
            | CellKind::Decision { .. }
            | CellKind::Workspace { .. }
            | CellKind::Rule { .. }
            | CellKind::ModeChanged { .. }
            | CellKind::Pinned { .. }
            | CellKind::Muted { .. }
            | CellKind::BudgetWarning { .. }
            | CellKind::BudgetChanged { .. }
            | CellKind::Notice { .. }
            | CellKind::Error { .. }
            | CellKind::Paused { .. }
            | CellKind::Resumed
            | CellKind::Terminated { .. } => (1, text, false),
        };
        let clamp = |n: usize| n.min(u32::MAX as usize) as u32;
        // A message's Markdown adds about a line per 80 bytes, whatever the width.
        let markdown = if message { text / 80 } else { 0 };
        Estimate {
            fixed: clamp(fixed.saturating_add(markdown)),
            text: clamp(text),
        }
    }

    /// The height estimate at `width` (O(1)).
    fn at(self, width: usize) -> u32 {
        self.at_div(Divisor::new(width))
    }

    /// The height estimate with the width's divisor made once (a resize does this for every
    /// cell: a multiplication instead of a division each).
    fn at_div(self, d: Divisor) -> u32 {
        self.fixed.saturating_add(d.div(self.text))
    }
}

/// Division of any `u32` by one width, exact, by a multiplication (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019: with `m = ⌈2^64 / w⌉`, `n / w` is the high 64
/// bits of `n · m` for every 32-bit `n`).
#[derive(Debug, Clone, Copy)]
struct Divisor {
    m: u64,
}

impl Divisor {
    /// For `width` columns (at least 8).
    fn new(width: usize) -> Self {
        let w = width.clamp(8, u32::MAX as usize) as u64;
        Divisor {
            m: u64::MAX / w + 1,
        }
    }

    fn div(self, n: u32) -> u32 {
        ((u128::from(n) * u128::from(self.m)) >> 64) as u32
    }
}

impl Transcript {
    /// Following the tail.
    pub fn following(&self) -> bool {
        self.follow
    }

    /// Cells that arrived since following stopped.
    pub fn unseen(&self) -> usize {
        self.unseen
    }

    /// Lines the transcript has at this width (estimates for cells not laid out), the line at the
    /// top of the screen, and the screen's height.
    pub fn position(&self) -> (u64, u64, usize) {
        let pos = self.heights.prefix(self.top.0) + self.top.1 as u64;
        (pos, self.heights.total(), self.viewport)
    }

    /// Forgets every layout (theme or fold toggled).
    pub fn restyle(&mut self) {
        self.style_gen += 1;
    }

    /// Takes new and changed cells from the view (`touched`: indices of changed cells).
    pub fn sync(&mut self, view: &SessionView, touched: &[usize]) {
        let n = view.cells.len();
        while self.heights.len() < n {
            let i = self.heights.len();
            let e = Estimate::of(&view.cells[i].kind);
            self.estimates.push(e);
            self.heights.push(e.at(self.width));
            if !self.follow {
                self.unseen += 1;
            }
        }
        for &i in touched {
            if i < n {
                let e = Estimate::of(&view.cells[i].kind);
                self.estimates[i] = e;
                if !self.cache.contains_key(&i) {
                    self.heights.set(i, e.at(self.width));
                }
            }
        }
    }

    /// Sets the width; heights are re-estimated (no wrapping) and cells laid out again when seen.
    pub fn set_width(&mut self, width: usize, view: &SessionView) {
        let width = width.max(1);
        if width == self.width && self.heights.len() == view.cells.len() {
            return;
        }
        self.width = width;
        if self.estimates.len() != view.cells.len() {
            self.estimates = view.cells.iter().map(|c| Estimate::of(&c.kind)).collect();
        }
        // From the small array of estimate inputs: a resize never walks the cells.
        // In place: a resize of a 100,000-cell transcript allocates nothing.
        let d = Divisor::new(width);
        self.heights
            .rebuild(self.estimates.iter().map(|e| e.at_div(d)));
        self.cache.clear();
        self.groups.clear();
        self.cached_lines = 0;
    }

    fn message_lines(&mut self, i: usize, ctx: &CellContext<'_>) -> (Vec<Line<'static>>, bool) {
        let cell = &ctx.view.cells[i];
        let CellKind::Message {
            agent,
            to,
            text,
            streaming,
            usage,
        } = &cell.kind
        else {
            return (Vec::new(), false);
        };
        let body_w = self.width.saturating_sub(2).max(1);
        let md = MdContext {
            theme: ctx.theme,
            highlighter: ctx.highlighter,
            expand: ctx.expand,
        };
        let hl_gen = ctx.highlighter.generation();
        let valid = self.groups.get(&i).is_some_and(|g| {
            g.width == body_w
                && g.style_gen == self.style_gen
                && g.hl_gen.is_none_or(|x| x == hl_gen)
                && g.end <= text.len()
                && text.is_char_boundary(g.end)
                && hash_str(&text[..g.end]) == g.hash
        });
        if !valid {
            self.groups.insert(
                i,
                MessageGroups {
                    width: body_w,
                    style_gen: self.style_gen,
                    hl_gen: None,
                    end: 0,
                    hash: hash_str(""),
                    rendered: Rendered::default(),
                },
            );
        }
        let Some(g) = self.groups.get_mut(&i) else {
            return (Vec::new(), false);
        };
        let cuts = split_stable(text, g.end);
        if let Some(&last) = cuts.last() {
            let mut start = g.end;
            for c in cuts {
                append_group(&mut g.rendered, &text[start..c], body_w, &md);
                start = c;
            }
            g.end = last;
            g.hash = hash_str(&text[..last]);
            if g.rendered.waiting {
                g.hl_gen = Some(hl_gen);
            }
        }
        let mut body = g.rendered.clone();
        append_group(&mut body, &text[g.end..], body_w, &md);
        let mut lines = Vec::with_capacity(body.lines.len() + 2);
        lines.push(message_header(
            agent,
            to.as_deref(),
            usage.as_ref(),
            *streaming,
            ctx,
        ));
        for mut l in body.lines {
            l.spans.insert(0, Span::raw("  "));
            lines.push(l);
        }
        lines.push(Line::default());
        (lines, body.waiting)
    }

    /// Lays out cell `i` (or takes it from the cache) and returns its height.
    fn layout(&mut self, i: usize, ctx: &CellContext<'_>) -> usize {
        self.tick += 1;
        let cell = &ctx.view.cells[i];
        let hl_gen = ctx.highlighter.generation();
        if let Some(l) = self.cache.get_mut(&i)
            && l.rev == cell.rev
            && l.width == self.width
            && l.style_gen == self.style_gen
            && l.hl_gen.is_none_or(|g| g == hl_gen)
        {
            l.used = self.tick;
            return l.lines.len();
        }
        let (lines, waiting) = match &cell.kind {
            CellKind::Message { .. } => self.message_lines(i, ctx),
            other => (render_cell(other, self.width, ctx), false),
        };
        let h = lines.len();
        self.cached_lines += h;
        if let Some(old) = self.cache.insert(
            i,
            Layout {
                rev: cell.rev,
                width: self.width,
                style_gen: self.style_gen,
                hl_gen: waiting.then_some(hl_gen),
                lines,
                used: self.tick,
            },
        ) {
            self.cached_lines -= old.lines.len();
        }
        self.heights.set(i, h.min(u32::MAX as usize) as u32);
        h
    }

    fn evict(&mut self) {
        if self.cached_lines <= MAX_CACHED_LINES {
            return;
        }
        let mut by_age: Vec<(u64, usize)> = self.cache.iter().map(|(i, l)| (l.used, *i)).collect();
        by_age.sort_unstable();
        for (_, i) in by_age {
            if self.cached_lines <= MAX_CACHED_LINES / 2 {
                break;
            }
            if let Some(l) = self.cache.remove(&i) {
                self.cached_lines -= l.lines.len();
                self.groups.remove(&i);
            }
        }
    }

    /// The lines to show in a viewport of `height` rows (fewer when the transcript is shorter).
    pub fn visible(
        &mut self,
        height: usize,
        ctx: &CellContext<'_>,
        now_ms: u64,
    ) -> Vec<Line<'static>> {
        self.viewport = height.max(1);
        let n = ctx.view.cells.len();
        if n == 0 || height == 0 {
            return Vec::new();
        }
        if !self.follow {
            let c = self.top.0.min(n - 1);
            let h = self.layout(c, ctx);
            self.top = (c, self.top.1.min(h.saturating_sub(1)));
            // At the bottom already: follow again.
            if self.lines_from_top(ctx, height) < height {
                self.follow = true;
                self.unseen = 0;
            }
        }
        let mut parts: Vec<(usize, usize)> = Vec::new(); // (cell, first line shown)
        if self.follow {
            let mut total = 0;
            let mut i = n;
            while i > 0 && total < height {
                i -= 1;
                total += self.layout(i, ctx);
                parts.push((i, 0));
            }
            parts.reverse();
            if let Some(first) = parts.first_mut() {
                first.1 = total.saturating_sub(height);
                self.top = *first;
            }
        } else {
            let mut total = 0;
            let mut i = self.top.0;
            let mut skip = self.top.1;
            while i < n && total < height {
                let h = self.layout(i, ctx);
                parts.push((i, skip));
                total += h.saturating_sub(skip);
                skip = 0;
                i += 1;
            }
        }
        let mut out = Vec::with_capacity(height);
        let running = ctx.view.running;
        for (i, skip) in parts {
            let Some(l) = self.cache.get(&i) else {
                continue;
            };
            for (k, line) in l.lines.iter().enumerate().skip(skip) {
                if out.len() >= height {
                    break;
                }
                if k == 0
                    && Some(i) == running
                    && let CellKind::Execution(x) = &ctx.view.cells[i].kind
                {
                    out.push(exec_header(x, now_ms, ctx.theme));
                    continue;
                }
                out.push(line.clone());
            }
        }
        if let Some(q) = self.query.clone().filter(|q| !q.is_empty()) {
            for l in &mut out {
                mark_matches(l, &q, ctx.theme.search_match());
            }
        }
        self.evict();
        out
    }

    /// Lines from the top anchor to the end, counting up to `limit`.
    fn lines_from_top(&mut self, ctx: &CellContext<'_>, limit: usize) -> usize {
        let n = ctx.view.cells.len();
        let mut total = 0;
        let mut i = self.top.0;
        let mut skip = self.top.1;
        while i < n && total < limit {
            total += self.layout(i, ctx).saturating_sub(skip);
            skip = 0;
            i += 1;
        }
        total
    }

    /// Scrolls by `delta` lines (negative: up). Scrolling up stops following the tail; reaching
    /// the end follows it again.
    pub fn scroll_by(&mut self, delta: i64, ctx: &CellContext<'_>) {
        let n = ctx.view.cells.len();
        if n == 0 {
            return;
        }
        if delta < 0 {
            if self.follow {
                self.follow = false;
                self.unseen = 0;
            }
            let mut d = delta.unsigned_abs() as usize;
            let (mut c, mut l) = (self.top.0.min(n - 1), self.top.1);
            while d > 0 {
                if l >= d {
                    l -= d;
                    d = 0;
                } else if c == 0 {
                    l = 0;
                    d = 0;
                } else {
                    d -= l + 1;
                    c -= 1;
                    l = self.layout(c, ctx).saturating_sub(1);
                }
            }
            self.top = (c, l);
        } else if delta > 0 && !self.follow {
            let mut d = delta as usize;
            let (mut c, mut l) = self.top;
            while d > 0 && c < n {
                let h = self.layout(c, ctx);
                if l + d < h {
                    l += d;
                    d = 0;
                } else if c + 1 < n {
                    d -= h - l;
                    c += 1;
                    l = 0;
                } else {
                    l = h.saturating_sub(1);
                    d = 0;
                }
            }
            self.top = (c, l);
            if self.lines_from_top(ctx, self.viewport) < self.viewport {
                self.follow = true;
                self.unseen = 0;
            }
        }
    }

    /// A page up or down (the screen's height less two lines of context).
    pub fn page(&mut self, down: bool, ctx: &CellContext<'_>) {
        let d = self.viewport.saturating_sub(2).max(1) as i64;
        self.scroll_by(if down { d } else { -d }, ctx);
    }

    /// To the start.
    pub fn top(&mut self) {
        self.follow = false;
        self.unseen = 0;
        self.top = (0, 0);
    }

    /// To the end, following new text.
    pub fn bottom(&mut self) {
        self.follow = true;
        self.unseen = 0;
    }

    /// The search in force (its matches are marked).
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Finds `query` (any case) in the next cell after the top one (or before, with `forward`
    /// false), wrapping around, and scrolls to its line. False when nothing matches.
    pub fn search(&mut self, query: &str, forward: bool, ctx: &CellContext<'_>) -> bool {
        let q = query.to_lowercase();
        self.query = Some(query.to_string());
        let n = ctx.view.cells.len();
        if q.is_empty() || n == 0 {
            return false;
        }
        let start = self.top.0.min(n - 1);
        for step in 1..=n {
            let i = if forward {
                (start + step) % n
            } else {
                (start + n - step % n) % n
            };
            if !ctx.view.cells[i]
                .kind
                .search_text()
                .to_lowercase()
                .contains(&q)
            {
                continue;
            }
            self.layout(i, ctx);
            let line = self.cache.get(&i).and_then(|l| {
                l.lines.iter().position(|line| {
                    let t: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
                    t.to_lowercase().contains(&q)
                })
            });
            self.follow = false;
            self.top = (i, line.unwrap_or(0));
            self.scroll_by(-1, ctx);
            return true;
        }
        false
    }

    /// Cells laid out and cached now (tests: a frame lays out the visible slice only).
    pub fn cached_cells(&self) -> usize {
        self.cache.len()
    }

    /// Ends the search (its marks go).
    pub fn clear_search(&mut self) {
        self.query = None;
    }
}

/// Restyles the parts of `line` that match `q` (any case).
fn mark_matches(line: &mut Line<'static>, q: &str, style: Style) {
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    let lower = text.to_lowercase();
    if lower.len() != text.len() || !lower.contains(&q.to_lowercase()) {
        return;
    }
    let ql = q.to_lowercase();
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(p) = lower[from..].find(&ql) {
        ranges.push((from + p, from + p + ql.len()));
        from += p + ql.len().max(1);
    }
    let mut out: Vec<Span<'static>> = Vec::new();
    let mut pos = 0;
    for s in std::mem::take(&mut line.spans) {
        let len = s.content.len();
        let (a, b) = (pos, pos + len);
        let mut cur = a;
        for &(ra, rb) in &ranges {
            if rb <= cur || ra >= b {
                continue;
            }
            let (sa, sb) = (ra.max(cur), rb.min(b));
            if sa > cur {
                out.push(Span::styled(text[cur..sa].to_string(), s.style));
            }
            out.push(Span::styled(text[sa..sb].to_string(), s.style.patch(style)));
            cur = sb;
        }
        if cur < b {
            out.push(Span::styled(text[cur..b].to_string(), s.style));
        }
        pos = b;
    }
    line.spans = out;
}

#[cfg(test)]
mod tests;
