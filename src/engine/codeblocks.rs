//! Finding the code an agent proposes: fenced blocks, language tags and inference, filename hints.

use crate::protocol::CodeBlock;

/// Languages the executor knows how to run by default (after normalisation).
pub const DEFAULT_EXECUTABLE: &[&str] = &["python", "bash", "sh"];

/// Extracts every fenced block (``` or ~~~) of `text`, in order, with normalised languages.
/// Unclosed fences are ignored: an agent cut off mid-block proposes nothing.
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
        let trimmed = line.trim_start();
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
            code.push_str(body_line);
        }
        if !closed {
            break;
        }
        if code.ends_with('\n') {
            code.pop();
            if code.ends_with('\r') {
                code.pop();
            }
        }
        if code.trim().is_empty() {
            continue;
        }
        let language = if tag.is_empty() {
            infer_language(&code)
        } else {
            normalize_language(&tag)
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

fn fence_of(line: &str) -> Option<(char, usize)> {
    let first = line.chars().next()?;
    if first != '`' && first != '~' {
        return None;
    }
    let n = line.chars().take_while(|c| *c == first).count();
    (n >= 3).then_some((first, n))
}

/// Maps common tags to the names the executor uses (`py` → `python`, `shell` → `sh`, ...).
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
        .to_string();
    match lower.as_str() {
        "py" | "python3" | "python" | "py3" => "python".into(),
        "bash" | "zsh" => "bash".into(),
        "sh" | "shell" | "console" | "shellscript" => "sh".into(),
        "js" | "javascript" | "node" => "javascript".into(),
        _ => lower,
    }
}

/// Guesses the language of an untagged block: shebangs first, then telltale lines; `text` when
/// nothing fits (a `text` block is shown but never offered for execution).
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
    for line in code.lines().map(str::trim) {
        if line.starts_with("def ")
            || line.starts_with("import ")
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
        ) || line.starts_with("$ ")
            || line.starts_with("fi")
            || line.ends_with("; then")
            || line.starts_with("done")
        {
            sh += 1;
        }
    }
    if py == 0 && sh == 0 {
        "text".into()
    } else if py >= sh {
        "python".into()
    } else {
        "sh".into()
    }
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
    DEFAULT_EXECUTABLE.contains(&language) || extra.contains_key(language)
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
