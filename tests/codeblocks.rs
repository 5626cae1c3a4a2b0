//! Code-block extraction held against what a reader of the reply sees: ~35 realistic replies
//! (AutoGen's own extraction cases among them, rewritten), each with the blocks it must yield —
//! language, exact code — and which of them are offered for execution with the default
//! interpreters.

use std::collections::BTreeMap;

use proctor::engine::codeblocks::{extract_blocks, is_executable};

struct Case {
    name: &'static str,
    reply: &'static str,
    /// (language, code) of every block, in order.
    blocks: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "untagged print (AutoGen)",
        reply: "Example:\n```\nprint(\"hello extract code\")\n```\n",
        blocks: &[("python", "print(\"hello extract code\")")],
    },
    Case {
        name: "two tagged python blocks (AutoGen)",
        reply: "Example:\n```python\ndef scrape(url):\n    import requests\n    return requests.get(url).text\n```\nTest:\n```python\nprint(scrape('https://example.com'))\n```\n",
        blocks: &[
            (
                "python",
                "def scrape(url):\n    import requests\n    return requests.get(url).text",
            ),
            ("python", "print(scrape('https://example.com'))"),
        ],
    },
    Case {
        name: "fence indented three spaces (AutoGen's indented case)",
        reply: "Example:\n   ```python\n   def scrape(url):\n       return url.upper()\n   print(scrape('x'))\n   ```\n",
        blocks: &[(
            "python",
            "def scrape(url):\n    return url.upper()\nprint(scrape('x'))",
        )],
    },
    Case {
        name: "fence inside a numbered list item",
        reply: "Steps:\n\n1. Install the package:\n\n   ```bash\n   pip install requests\n   ```\n\n2. Run the script:\n\n   ```python\n   import requests\n\n   def main():\n       print(requests.__version__)\n\n   main()\n   ```\n",
        blocks: &[
            ("bash", "pip install requests"),
            (
                "python",
                "import requests\n\ndef main():\n    print(requests.__version__)\n\nmain()",
            ),
        ],
    },
    Case {
        name: "fence inside a bullet, indented four spaces",
        reply: "- Check it:\n    ```python\n    if True:\n        print('ok')\n    ```\n",
        blocks: &[("python", "if True:\n    print('ok')")],
    },
    Case {
        name: "body indented less than the fence keeps what it has",
        reply: "  ```python\nx = 1\n   y = 2\n  ```\n",
        blocks: &[("python", "x = 1\n y = 2")],
    },
    Case {
        name: "tab-indented fence",
        reply: "*\tRun:\n\t```sh\n\techo hi\n\t```\n",
        blocks: &[("sh", "echo hi")],
    },
    Case {
        name: "windows line ends (AutoGen)",
        reply: "Run:\r\n```python\r\nprint('hello world')\r\nprint('again')\r\n```\r\n",
        blocks: &[("python", "print('hello world')\nprint('again')")],
    },
    Case {
        name: "tagged pip install (AutoGen's sh case)",
        reply: "```sh\npip install pandas\n```",
        blocks: &[("sh", "pip install pandas")],
    },
    Case {
        name: "untagged shell commands",
        reply: "```\npip install requests\npython3 app.py\n```",
        blocks: &[("sh", "pip install requests\npython3 app.py")],
    },
    Case {
        name: "untagged bash with if/fi",
        reply: "```\nif [ -f data.csv ]; then\n  echo found\nfi\n```",
        blocks: &[("sh", "if [ -f data.csv ]; then\n  echo found\nfi")],
    },
    Case {
        name: "untagged python starting with imports",
        reply: "```\nimport os\nimport sys\nprint(sys.argv, os.getcwd())\n```",
        blocks: &[(
            "python",
            "import os\nimport sys\nprint(sys.argv, os.getcwd())",
        )],
    },
    Case {
        name: "untagged python import with aliases",
        reply: "```\nimport numpy as np, pandas as pd\ndf = pd.DataFrame(np.eye(2))\n```",
        blocks: &[(
            "python",
            "import numpy as np, pandas as pd\ndf = pd.DataFrame(np.eye(2))",
        )],
    },
    Case {
        name: "untagged Java starting with import is not python",
        reply: "```\nimport java.util.*;\n\npublic class Main {\n    public static void main(String[] a) {\n        System.out.println(new ArrayList<>());\n    }\n}\n```",
        blocks: &[(
            "text",
            "import java.util.*;\n\npublic class Main {\n    public static void main(String[] a) {\n        System.out.println(new ArrayList<>());\n    }\n}",
        )],
    },
    Case {
        name: "untagged JavaScript module is not python",
        reply: "```\nimport fs from 'fs';\nconsole.log(fs.readdirSync('.'));\n```",
        blocks: &[(
            "text",
            "import fs from 'fs';\nconsole.log(fs.readdirSync('.'));",
        )],
    },
    Case {
        name: "untagged JavaScript import without semicolons",
        reply: "```\nimport { readFile } from \"node:fs/promises\"\nconst text = await readFile(\"a.txt\", \"utf8\")\n```",
        blocks: &[(
            "text",
            "import { readFile } from \"node:fs/promises\"\nconst text = await readFile(\"a.txt\", \"utf8\")",
        )],
    },
    Case {
        name: "untagged Go is not python",
        reply: "```\npackage main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n```",
        blocks: &[(
            "text",
            "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}",
        )],
    },
    Case {
        name: "console transcript is shown, not run",
        reply: "Here is what I saw:\n```console\n$ ls\nREADME.md  rm -rf /\n$ python --version\nPython 3.12.1\n```",
        blocks: &[(
            "console",
            "$ ls\nREADME.md  rm -rf /\n$ python --version\nPython 3.12.1",
        )],
    },
    Case {
        name: "untagged transcript with prompts",
        reply: "```\n$ pip install rich\nSuccessfully installed rich-13.7.1\n```",
        blocks: &[(
            "console",
            "$ pip install rich\nSuccessfully installed rich-13.7.1",
        )],
    },
    Case {
        name: "shell-session tag is a transcript too",
        reply: "```shell-session\n$ echo hi\nhi\n```",
        blocks: &[("console", "$ echo hi\nhi")],
    },
    Case {
        name: "untagged four-backtick fence quoting a fenced example",
        reply: "Format your answer like this:\n````\n```python\nprint('your code')\n```\n````\n",
        blocks: &[("markdown", "```python\nprint('your code')\n```")],
    },
    Case {
        name: "tagged markdown fence quoting an example",
        reply: "````markdown\n```python\nx\n```\n````\n",
        blocks: &[("markdown", "```python\nx\n```")],
    },
    Case {
        name: "python whose string holds a fence, inside a longer fence",
        reply: "````python\nprint('```')\n````\n",
        blocks: &[("python", "print('```')")],
    },
    Case {
        name: "reply cut off mid-block proposes nothing",
        reply: "Sure:\n```python\nprint(1)\nprint(2",
        blocks: &[],
    },
    Case {
        name: "inline triple backticks in prose are not a fence",
        reply: "Wrap code in ```python``` fences, then run it.",
        blocks: &[],
    },
    Case {
        name: "tilde fence",
        reply: "~~~py\nprint(2)\n~~~\n",
        blocks: &[("python", "print(2)")],
    },
    Case {
        name: "filename hint",
        reply: "```python\n# filename: src/app.py\nprint('app')\n```",
        blocks: &[("python", "# filename: src/app.py\nprint('app')")],
    },
    Case {
        name: "javascript with a slash-slash hint needs an interpreter",
        reply: "```js\n// filename: index.js\nconsole.log(1)\n```",
        blocks: &[("javascript", "// filename: index.js\nconsole.log(1)")],
    },
    Case {
        name: "tag spellings",
        reply: "```Python\na = 1\n```\n```py3\nb = 2\n```\n```{python}\nc = 3\n```\n```zsh\necho z\n```\n```python title=\"x.py\"\nd = 4\n```",
        blocks: &[
            ("python", "a = 1"),
            ("python", "b = 2"),
            ("python", "c = 3"),
            ("bash", "echo z"),
            ("python", "d = 4"),
        ],
    },
    Case {
        name: "display-only languages",
        reply: "```text\nplain words\n```\n```diff\n-a\n+b\n```\n```json\n{\"a\": 1}\n```\n```output\n42\n```",
        blocks: &[
            ("text", "plain words"),
            ("diff", "-a\n+b"),
            ("json", "{\"a\": 1}"),
            ("output", "42"),
        ],
    },
    Case {
        name: "empty and blank blocks are skipped",
        reply: "```python\n```\n```\n   \n```\n```bash\nls\n```",
        blocks: &[("bash", "ls")],
    },
    Case {
        name: "prose only",
        reply: "The function looks right to me. TERMINATE",
        blocks: &[],
    },
    Case {
        name: "untagged python with a file variable",
        reply: "```\nwith open('notes.txt') as f:\n    file = f.read()\nprint(file)\n```",
        blocks: &[(
            "python",
            "with open('notes.txt') as f:\n    file = f.read()\nprint(file)",
        )],
    },
    Case {
        name: "untagged prose stays text",
        reply: "```\nThe answer is 42.\n```",
        blocks: &[("text", "The answer is 42.")],
    },
    Case {
        name: "blank lines inside an indented block",
        reply: "1. Code:\n   ```python\n   a = 1\n\n   b = 2\n   ```\n",
        blocks: &[("python", "a = 1\n\nb = 2")],
    },
    Case {
        name: "lone carriage return is kept for the approval to show",
        reply: "```python\n# tidy later\rimport os\n```",
        blocks: &[("python", "# tidy later\rimport os")],
    },
];

#[test]
fn every_reply_yields_the_blocks_a_reader_sees() {
    let mut failures = Vec::new();
    for case in CASES {
        let got: Vec<(String, String)> = extract_blocks(case.reply)
            .into_iter()
            .map(|b| (b.language, b.code))
            .collect();
        let want: Vec<(String, String)> = case
            .blocks
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect();
        if got != want {
            failures.push(format!("{}:\n  want {want:?}\n  got  {got:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(CASES.len() >= 30);
}

#[test]
fn only_runnable_languages_are_offered() {
    let none = BTreeMap::new();
    let offered = |reply: &str, extra: &BTreeMap<String, Vec<String>>| -> Vec<String> {
        extract_blocks(reply)
            .into_iter()
            .filter(|b| is_executable(&b.language, extra))
            .map(|b| b.language)
            .collect()
    };
    let transcript = CASES
        .iter()
        .find(|c| c.name.starts_with("console"))
        .unwrap();
    assert!(offered(transcript.reply, &none).is_empty());
    let java = CASES
        .iter()
        .find(|c| c.name.contains("Java starting"))
        .unwrap();
    assert!(offered(java.reply, &none).is_empty());
    let quoted = CASES
        .iter()
        .find(|c| c.name.contains("four-backtick"))
        .unwrap();
    assert!(offered(quoted.reply, &none).is_empty());
    let js = CASES
        .iter()
        .find(|c| c.name.starts_with("javascript"))
        .unwrap();
    assert!(offered(js.reply, &none).is_empty());
    let node = BTreeMap::from([("javascript".to_string(), vec!["node".to_string()])]);
    assert_eq!(offered(js.reply, &node), ["javascript"]);
    // A console block is never offered, even if a team names an interpreter for it.
    let console = BTreeMap::from([("console".to_string(), vec!["sh".to_string()])]);
    assert!(offered(transcript.reply, &console).is_empty());
    let list = CASES
        .iter()
        .find(|c| c.name.contains("numbered list"))
        .unwrap();
    assert_eq!(offered(list.reply, &none), ["bash", "python"]);
}
