//! A small unified line diff: what the human changed in an edited block (the agent's report, the
//! Markdown export, the TUI's edit confirmation) and what a session changed in a workspace file
//! (the TUI's `f` pane).

/// Lines compared with the LCS table above this many cells fall back to "all removed, all added".
const MAX_CELLS: usize = 4_000_000;
/// Context lines around each change.
const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same(usize, usize),
    Del(usize),
    Add(usize),
}

fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > MAX_CELLS {
        let mut ops: Vec<Op> = (0..n).map(Op::Del).collect();
        ops.extend((0..m).map(Op::Add));
        return ops;
    }
    // lcs[i][j] = length of the LCS of a[i..] and b[j..]
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i * w + j + 1] >= lcs[(i + 1) * w + j]) {
            ops.push(Op::Add(j));
            j += 1;
        } else {
            ops.push(Op::Del(i));
            i += 1;
        }
    }
    // Within each run of changes, show removals before additions.
    let mut k = 0;
    while k < ops.len() {
        if matches!(ops[k], Op::Same(..)) {
            k += 1;
            continue;
        }
        let start = k;
        while k < ops.len() && !matches!(ops[k], Op::Same(..)) {
            k += 1;
        }
        ops[start..k].sort_by_key(|op| match op {
            Op::Del(i) => (0, *i),
            Op::Add(j) => (1, *j),
            Op::Same(..) => (2, 0),
        });
    }
    ops
}

/// The common head and tail of `a` and `b`: (head, tail) lengths, never overlapping.
fn common_ends(a: &[&str], b: &[&str]) -> (usize, usize) {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    (head, tail)
}

/// [`edit_script`] of the part between the common head and tail (so a small edit of a big file
/// stays a small table), with the head and tail as unchanged lines around it.
fn trimmed_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (head, tail) = common_ends(a, b);
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops: Vec<Op> = (0..head).map(|i| Op::Same(i, i)).collect();
    ops.extend(edit_script(ma, mb).into_iter().map(|op| match op {
        Op::Same(i, j) => Op::Same(i + head, j + head),
        Op::Del(i) => Op::Del(i + head),
        Op::Add(j) => Op::Add(j + head),
    }));
    let (ta, tb) = (a.len() - tail, b.len() - tail);
    ops.extend((0..tail).map(|k| Op::Same(ta + k, tb + k)));
    ops
}

/// Lines added and removed from `old` to `new` (lines compared without their endings). The common
/// head and tail are skipped first, so a small edit of a big file costs little; a middle too big
/// for the table counts as all removed and all added.
pub fn line_counts(old: &str, new: &str) -> (u64, u64) {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (head, tail) = common_ends(&a, &b);
    let (a, b) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let (mut added, mut removed) = (0u64, 0u64);
    for op in edit_script(a, b) {
        match op {
            Op::Add(_) => added += 1,
            Op::Del(_) => removed += 1,
            Op::Same(..) => {}
        }
    }
    (added, removed)
}

/// A unified diff of `old` against `new` (`---`/`+++` headers, `@@` hunks, three lines of context).
/// Empty when the texts have the same lines.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = trimmed_script(&a, &b);
    if ops.iter().all(|op| matches!(op, Op::Same(..))) {
        return String::new();
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Same(..)))
        .map(|(k, _)| k)
        .collect();
    // Group changes whose context overlaps into hunks of op indices.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(ops.len());
        match hunks.last_mut() {
            Some((_, end)) if lo <= *end => *end = hi,
            _ => hunks.push((lo, hi)),
        }
    }
    for (lo, hi) in hunks {
        // Line numbers where the hunk starts in each text (1-based), and its lengths.
        let (mut a_start, mut b_start) = (None, None);
        let (mut a_len, mut b_len) = (0usize, 0usize);
        let mut body = String::new();
        for op in &ops[lo..hi] {
            match *op {
                Op::Same(i, j) => {
                    a_start.get_or_insert(i);
                    b_start.get_or_insert(j);
                    a_len += 1;
                    b_len += 1;
                    body.push_str(&format!(" {}\n", a[i]));
                }
                Op::Del(i) => {
                    a_start.get_or_insert(i);
                    a_len += 1;
                    body.push_str(&format!("-{}\n", a[i]));
                }
                Op::Add(j) => {
                    b_start.get_or_insert(j);
                    b_len += 1;
                    body.push_str(&format!("+{}\n", b[j]));
                }
            }
        }
        // An empty side starts "after" the line before the hunk, as diff -u prints it.
        let a_pos = a_start.map_or_else(|| before(&ops[..lo], true), |i| i + 1);
        let b_pos = b_start.map_or_else(|| before(&ops[..lo], false), |j| j + 1);
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a_pos, a_len),
            range(b_pos, b_len)
        ));
        out.push_str(&body);
    }
    out
}

/// Number of lines of one side that come before a hunk.
fn before(ops: &[Op], old_side: bool) -> usize {
    ops.iter()
        .filter(|op| match op {
            Op::Same(..) => true,
            Op::Del(_) => old_side,
            Op::Add(_) => !old_side,
        })
        .count()
}

fn range(start: usize, len: usize) -> String {
    if len == 1 {
        start.to_string()
    } else {
        format!("{start},{len}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_changed_line() {
        let d = unified("a\nb\nc\n", "a\nB\nc\n", "proposed", "edited");
        assert_eq!(
            d,
            "--- proposed\n+++ edited\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
    }

    #[test]
    fn same_text_gives_no_diff() {
        assert_eq!(unified("x\ny", "x\ny\n", "a", "b"), "");
    }

    #[test]
    fn far_apart_changes_make_two_hunks() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new: String = (1..=20)
            .map(|i| match i {
                2 => "two\n".to_string(),
                19 => "nineteen\n".to_string(),
                _ => format!("{i}\n"),
            })
            .collect();
        let d = unified(&old, &new, "a", "b");
        assert_eq!(d.matches("@@").count(), 4, "{d}");
        assert!(d.contains("@@ -1,5 +1,5 @@"), "{d}");
        assert!(d.contains("@@ -16,5 +16,5 @@"), "{d}");
    }

    #[test]
    fn line_counts_of_edits() {
        assert_eq!(line_counts("a\nb\nc\n", "a\nB\nc\nd\n"), (2, 1));
        assert_eq!(line_counts("", "x\ny\n"), (2, 0));
        assert_eq!(line_counts("x\ny", ""), (0, 2));
        assert_eq!(line_counts("same\n", "same\n"), (0, 0));
        // A one-line change in a file far beyond the table's size stays exact.
        let big: String = (0..50_000).map(|i| format!("{i}\n")).collect();
        let edited = big.replacen("25000\n", "changed\n", 1);
        assert_eq!(line_counts(&big, &edited), (1, 1));
    }

    #[test]
    fn a_small_edit_of_a_big_file_is_a_small_hunk() {
        // Far beyond the table's size: without trimming the common ends this would be every line
        // removed and added again.
        let big: String = (0..50_000).map(|i| format!("{i}\n")).collect();
        let edited = big.replacen("\n25000\n", "\nchanged\n", 1);
        let d = unified(&big, &edited, "a", "b");
        assert_eq!(
            d,
            "--- a\n+++ b\n@@ -24998,7 +24998,7 @@\n 24997\n 24998\n 24999\n-25000\n+changed\n 25001\n 25002\n 25003\n"
        );
    }

    #[test]
    fn lines_added_to_empty() {
        assert_eq!(
            unified("", "x\n", "a", "b"),
            "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n"
        );
    }
}
