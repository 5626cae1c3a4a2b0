//! Finding the code an agent proposes: fenced blocks, language tags and inference, filename hints.

use crate::protocol::CodeBlock;

/// Languages the executor knows how to run by default (after normalisation).
pub const DEFAULT_EXECUTABLE: &[&str] = &["python", "bash", "sh"];

/// Languages whose blocks are shown but never offered for execution, whatever the team's
/// interpreters say: prose, quoted Markdown, diffs, and `console` transcripts (`$ ` prompts mixed
/// with the output they printed: running one as a script would run its output too).
pub const DISPLAY_ONLY: &[&str] = &["text", "markdown", "console", "diff", "output"];

/// Extracts every fenced block (``` or ~~~) of `text`, in order, with normalised languages.
/// Unclosed fences are ignored: an agent cut off mid-block proposes nothing.
///
/// As in CommonMark, a fence indented by N columns (inside a list item, say) has up to N columns
/// of indentation removed from each line of its body, so the code is what a reader sees. Windows
/// line ends (`\r\n`) become `\n`; a lone `\r` is kept (the approval shows it).
///
/// ```
/// let blocks = proctor::engine::codeblocks::extract_blocks(
///     "Run this:\n```py\n# filename: hello.py\nprint('hi')\n```\n",
/// );
/// assert_eq!(blocks.len(), 1);
/// assert_eq!(blocks[0].language, "python");
/// assert_eq!(blocks[0].filename.as_deref(), Some("hello.py"));
/// ```
pub fn extract_blocks(text: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut lines = text.split_inclusive('\n');
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        let indent = columns(&line[..line.len() - trimmed.len()]);
        let Some((fence_char, fence_len)) = fence_of(trimmed) else {
            continue;
        };
        let info = trimmed[fence_len..].trim();
        if fence_char == '`' && info.contains('`') {
            continue; // inline code span, not a fence
        }
        let tag = info.split_whitespace().next().unwrap_or("").to_string();
        let mut code = String::new();
        let mut closed = false;
        for body_line in lines.by_ref() {
            let t = body_line.trim();
            if let Some((c, n)) = fence_of(t)
                && c == fence_char
                && n >= fence_len
                && t.chars().all(|ch| ch == fence_char)
            {
                closed = true;
                break;
            }
            let body_line = strip_indent(body_line, indent);
            match body_line.strip_suffix("\r\n") {
                Some(rest) => {
                    code.push_str(rest);
                    code.push('\n');
                }
                None => code.push_str(body_line),
            }
        }
        if !closed {
            break;
        }
        if code.ends_with('\n') {
            code.pop();
        }
        if code.trim().is_empty() {
            continue;
        }
        let language = if !tag.is_empty() {
            normalize_language(&tag)
        } else if quotes_a_fence(&code) {
            // An untagged fence around a fenced example is quoted Markdown, not code.
            "markdown".into()
        } else {
            infer_language(&code)
        };
        let filename = filename_hint(&code);
        blocks.push(CodeBlock {
            index: blocks.len(),
            language,
            code,
            filename,
        });
    }
    blocks
}

/// Width of leading blanks in columns (tabs to the next multiple of 4, as CommonMark counts).
fn columns(blanks: &str) -> usize {
    blanks.chars().fold(0, |col, c| match c {
        '\t' => col + 4 - col % 4,
        _ => col + 1,
    })
}

/// `line` without up to `indent` columns of leading blanks.
fn strip_indent(line: &str, indent: usize) -> &str {
    let mut col = 0;
    for (i, c) in line.char_indices() {
        let next = match c {
            ' ' => col + 1,
            '\t' => col + 4 - col % 4,
            _ => return &line[i..],
        };
        if next > indent {
            return &line[i..];
        }
        col = next;
    }
    &line[line.len()..]
}

/// Whether a block's body holds a fence line of its own (a quoted Markdown example).
fn quotes_a_fence(code: &str) -> bool {
    code.lines().any(|l| fence_of(l.trim()).is_some())
}

fn fence_of(line: &str) -> Option<(char, usize)> {
    let first = line.chars().next()?;
    if first != '`' && first != '~' {
        return None;
    }
    let n = line.chars().take_while(|c| *c == first).count();
    (n >= 3).then_some((first, n))
}

/// Maps common tags to the names the executor and `[executor.interpreters]` use (`py` →
/// `python`, `shell` → `sh`, `node` → `javascript`, ...). A `console` block is a transcript and
/// stays `console` (display only).
pub fn normalize_language(tag: &str) -> String {
    let lower = tag
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase();
    let lower = lower
        .split([',', '{'])
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches('.')
        .to_string();
    match lower.as_str() {
        "py" | "python3" | "python" | "py3" => "python".into(),
        "bash" | "zsh" => "bash".into(),
        "sh" | "shell" | "shellscript" => "sh".into(),
        "console" | "shell-session" | "shellsession" | "sh-session" | "terminal" => {
            "console".into()
        }
        "js" | "javascript" | "node" | "nodejs" | "mjs" | "cjs" => "javascript".into(),
        "ts" | "typescript" => "typescript".into(),
        "rb" | "ruby" => "ruby".into(),
        "pl" | "perl" => "perl".into(),
        "golang" | "go" => "go".into(),
        "rs" | "rust" => "rust".into(),
        "md" | "markdown" => "markdown".into(),
        "txt" | "text" | "plaintext" | "plain" => "text".into(),
        _ => lower,
    }
}

/// Guesses the language of an untagged block: shebangs first, then telltale lines; `text` when
/// nothing fits or the block looks like another language (a `text` block is shown but never
/// offered for execution).
pub fn infer_language(code: &str) -> String {
    let first = code
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if first.starts_with("#!") {
        if first.contains("python") {
            return "python".into();
        }
        if first.contains("bash") {
            return "bash".into();
        }
        if first.ends_with("/sh") || first.contains(" sh") {
            return "sh".into();
        }
    }
    let mut py = 0;
    let mut sh = 0;
    let mut other = 0;
    for line in code.lines().map(str::trim) {
        if looks_like_other_language(line) {
            other += 1;
            continue;
        }
        if line.starts_with("def ")
            || is_python_import(line)
            || line.starts_with("from ") && line.contains(" import ")
            || line.starts_with("class ") && line.ends_with(':')
            || line.starts_with("print(")
            || line.starts_with("if __name__")
            || line.starts_with("for ") && line.ends_with(':')
            || line.starts_with("while ") && line.ends_with(':')
            || line.starts_with("with ") && line.ends_with(':')
        {
            py += 1;
        }
        let word = line.split_whitespace().next().unwrap_or("");
        if matches!(
            word,
            "echo"
                | "ls"
                | "cd"
                | "cat"
                | "pip"
                | "mkdir"
                | "rm"
                | "cp"
                | "mv"
                | "export"
                | "grep"
                | "apt-get"
                | "curl"
                | "chmod"
                | "touch"
                | "python"
                | "python3"
                | "set"
        ) || matches!(line, "fi" | "done" | "esac")
            || line.ends_with("; then")
            || line.ends_with("; do")
        {
            sh += 1;
        }
        if line.starts_with("$ ") {
            // A prompt: a transcript, not a script.
            return "console".into();
        }
    }
    if py == 0 && sh == 0 || other >= py.max(sh) {
        "text".into()
    } else if py >= sh {
        "python".into()
    } else {
        "sh".into()
    }
}

/// `import a.b [as c][, d]`: Python's import statement (not Java's `import a.*;`, JavaScript's
/// `import x from 'y'` or Go's `import "fmt"`).
fn is_python_import(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("import ") else {
        return false;
    };
    let rest = rest.split('#').next().unwrap_or("").trim();
    !rest.is_empty()
        && rest.split(',').all(|item| {
            let mut words = item.split_whitespace();
            let dotted = |w: &str| {
                w.split('.').all(|part| {
                    part.starts_with(|c: char| c.is_alphabetic() || c == '_')
                        && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                })
            };
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some(name), None, None, None) => dotted(name),
                (Some(name), Some("as"), Some(alias), None) => dotted(name) && dotted(alias),
                _ => false,
            }
        })
}

/// Lines that Python and shell scripts do not have: statement semicolons and braces, and the
/// keywords of C-family, JVM, Go and JavaScript code.
fn looks_like_other_language(line: &str) -> bool {
    const STARTS: &[&str] = &[
        "public ",
        "private ",
        "protected ",
        "package ",
        "func ",
        "fn ",
        "fun ",
        "const ",
        "let ",
        "var ",
        "function ",
        "#include",
        "using ",
        "namespace ",
        "console.log",
        "System.out",
        "int main",
        "void ",
        "import {",
        "import (",
        "import \"",
        "import '",
        "//",
        "/*",
    ];
    let import_from_quote =
        line.starts_with("import ") && (line.contains(" from '") || line.contains(" from \""));
    STARTS.iter().any(|s| line.starts_with(s))
        || import_from_quote
        || (line.starts_with("import ") && line.ends_with(';'))
        || line == "{"
        || line == "}"
        || line == "};"
}

/// `# filename: x.py` (or `// filename:`) on the first non-empty line of a block.
pub fn filename_hint(code: &str) -> Option<String> {
    let first = code.lines().find(|l| !l.trim().is_empty())?.trim();
    let rest = first
        .strip_prefix('#')
        .or_else(|| first.strip_prefix("//"))
        .or_else(|| first.strip_prefix("--"))?
        .trim_start();
    let name = rest.strip_prefix("filename:")?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Whether blocks in `language` can be offered for execution, given the team's extra interpreters.
pub fn is_executable(
    language: &str,
    extra: &std::collections::BTreeMap<String, Vec<String>>,
) -> bool {
    !DISPLAY_ONLY.contains(&language)
        && (DEFAULT_EXECUTABLE.contains(&language) || extra.contains_key(language))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_blocks_each_with_language_and_hint() {
        let text =
            "Plan:\n```python\n# filename: a.py\nprint(1)\n```\nthen\n```bash\necho hi\n```\n";
        let b = extract_blocks(text);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].language, "python");
        assert_eq!(b[0].filename.as_deref(), Some("a.py"));
        assert_eq!(b[0].code, "# filename: a.py\nprint(1)");
        assert_eq!(b[1].index, 1);
        assert_eq!(b[1].language, "bash");
        assert_eq!(b[1].filename, None);
    }

    #[test]
    fn untagged_blocks_are_inferred() {
        let b = extract_blocks(
            "```\nimport os\nprint(os.getcwd())\n```\n```\nls -la\necho done\n```\n```\nhello world\n```",
        );
        let langs: Vec<_> = b.iter().map(|b| b.language.as_str()).collect();
        assert_eq!(langs, ["python", "sh", "text"]);
    }

    #[test]
    fn unclosed_fence_proposes_nothing_and_tildes_work() {
        assert!(extract_blocks("```python\nprint(1)\n").is_empty());
        let b = extract_blocks("~~~py\nprint(2)\n~~~\n");
        assert_eq!(b[0].language, "python");
        assert_eq!(b[0].code, "print(2)");
    }

    #[test]
    fn longer_fence_contains_shorter_one() {
        let b = extract_blocks("````markdown\n```python\nx\n```\n````\n");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].language, "markdown");
        assert!(b[0].code.contains("```python"));
    }
}
