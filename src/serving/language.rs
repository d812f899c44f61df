//! Which language the cursor is in: it picks the expert adapter. The LSP `languageId` first, the
//! file extension when the editor sent none; inside Markdown fences and HTML `<script>`/`<style>`
//! blocks, the language of that region.

/// The language at byte `offset` of a document.
pub fn language_at(language_id: &str, uri: &str, text: &str, offset: usize) -> String {
    let document = match normalize(language_id) {
        Some(language) => language,
        None => extension(uri).and_then(normalize).unwrap_or("plaintext"),
    };
    let region = match document {
        "markdown" => fenced_language(text, offset),
        "html" | "vue" | "svelte" => html_region(text, offset),
        _ => None,
    };
    region.unwrap_or_else(|| document.to_owned())
}

/// The canonical name for an LSP language id, a fence info word or a file extension.
fn normalize(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    Some(match name.as_str() {
        "python" | "py" | "python3" | "pyi" => "python",
        "rust" | "rs" => "rust",
        "javascript" | "js" | "javascriptreact" | "jsx" | "mjs" | "cjs" | "node" => "javascript",
        "typescript" | "ts" | "typescriptreact" | "tsx" | "mts" | "cts" => "typescript",
        "go" | "golang" => "go",
        "c" | "h" => "c",
        "cpp" | "c++" | "cc" | "cxx" | "hpp" | "hh" => "cpp",
        "java" => "java",
        "ruby" | "rb" => "ruby",
        "lua" => "lua",
        "shellscript" | "sh" | "bash" | "zsh" | "shell" => "shell",
        "markdown" | "md" => "markdown",
        "html" | "htm" => "html",
        "css" => "css",
        "vue" => "vue",
        "svelte" => "svelte",
        "json" => "json",
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        "sql" => "sql",
        _ => return None,
    })
}

fn extension(uri: &str) -> Option<&str> {
    let name = uri.rsplit('/').next()?;
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then_some(ext)
}

/// The info-string language of the fenced code block (``` or ~~~) around `offset`, if any. On a
/// fence line itself the cursor is in the Markdown.
fn fenced_language(text: &str, offset: usize) -> Option<String> {
    let mut open: Option<(char, usize, &str)> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let fence = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence.map_or(0, |c| trimmed.chars().take_while(|&x| x == c).count());
        let rest = trimmed[run..].trim();
        let is_fence = match open {
            None => run >= 3,
            Some((c, length, _)) => fence == Some(c) && run >= length && rest.is_empty(),
        };
        if (line_start..line_start + line.len()).contains(&offset) {
            return if is_fence { None } else { open.map(|(_, _, info)| info_language(info)) };
        }
        if is_fence {
            open = match open {
                None => Some((fence.unwrap_or('`'), run, rest)),
                Some(_) => None,
            };
        }
        line_start += line.len();
    }
    open.map(|(_, _, info)| info_language(info))
}

fn info_language(info: &str) -> String {
    let word = info.split(|c: char| c.is_whitespace() || c == ',' || c == '{').next().unwrap_or_default();
    normalize(word)
        .map_or_else(|| if word.is_empty() { "markdown".into() } else { word.to_ascii_lowercase() }, Into::into)
}

/// `javascript`/`typescript` inside `<script>`, `css` inside `<style>`.
fn html_region(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let lower = before.to_ascii_lowercase();
    for (tag, language) in [("script", "javascript"), ("style", "css")] {
        let Some(open) = lower.rfind(&format!("<{tag}")) else { continue };
        if lower[open..].contains(&format!("</{tag}")) {
            continue;
        }
        let Some(tag_end) = lower[open..].find('>') else { continue };
        let attributes = &lower[open..open + tag_end];
        let typescript = attributes.contains("lang=\"ts\"") || attributes.contains("lang=\"typescript\"");
        return Some(if typescript { "typescript".into() } else { language.into() });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_ids_then_extensions() {
        assert_eq!(language_at("python", "file:///a/b.txt", "", 0), "python");
        assert_eq!(language_at("typescriptreact", "file:///a/b.tsx", "", 0), "typescript");
        assert_eq!(language_at("", "file:///a/lib.rs", "", 0), "rust");
        assert_eq!(language_at("plaintext", "file:///a/main.go", "", 0), "go");
        assert_eq!(language_at("", "file:///a/README", "", 0), "plaintext");
        assert_eq!(language_at("", "file:///a/.bashrc", "", 0), "plaintext");
    }

    #[test]
    fn markdown_fences_route_by_their_info_string() {
        let text =
            "# Title\n\n```python\ndef f():\n    pass\n```\n\ntext\n~~~rust ignore\nfn main() {}\n~~~\n```\nplain\n";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(language_at("markdown", "file:///r.md", text, at("Title")), "markdown");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("def f")), "python");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("pass")), "python");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("text")), "markdown");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("fn main")), "rust");
        assert_eq!(language_at("markdown", "file:///r.md", text, at("```python")), "markdown");
        // An unclosed fence without info runs to the end of the file.
        assert_eq!(language_at("markdown", "file:///r.md", text, at("plain")), "markdown");
        assert_eq!(language_at("markdown", "file:///r.md", text, text.len()), "markdown");
        let open = "```py\nx = ";
        assert_eq!(language_at("markdown", "file:///r.md", open, open.len()), "python");
    }

    #[test]
    fn html_script_and_style_blocks() {
        let text = "<html><script type=\"module\">let x = 1;</script><style>p { }</style><p>hi</p>\
                    <script lang=\"ts\">let y: number</script>";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(language_at("html", "file:///i.html", text, at("let x")), "javascript");
        assert_eq!(language_at("html", "file:///i.html", text, at("p {")), "css");
        assert_eq!(language_at("html", "file:///i.html", text, at("hi")), "html");
        assert_eq!(language_at("html", "file:///i.html", text, at("let y")), "typescript");
    }
}
