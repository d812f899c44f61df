//! Where a completion ends, and what of it is shown.
//!
//! [`mode_at`] decides from the text around the cursor whether a completion may span lines;
//! [`StopScanner`] watches the decoded text after every token and says where to cut; [`finish`] turns
//! the cut text into the suggestion, or into nothing when it adds nothing.
//!
//! Bracket handling uses a deliberately rough lexer (`"…"` strings and `//` / `#` line comments are
//! skipped; single quotes are not strings because of Rust lifetimes): it runs on every completion and
//! must not need a grammar per language. Its mistakes make the clean-up keep more, not less.

/// Whether a completion may span several lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    SingleLine,
    MultiLine,
}

/// Multi-line when the cursor starts a block, single-line otherwise. A block starts when both:
/// - the rest of the cursor's line is empty or only closing brackets (auto-paired ones), possibly
///   followed by `;` or `,`; and
/// - the line before the cursor is blank after its indentation, or ends with a block opener: `:` (but
///   not a `::` path), `{`, `(`, `[`, `=>`, `->`, or the word `do` or `then`.
pub fn mode_at(prefix: &str, suffix: &str) -> Mode {
    let before = prefix[prefix.rfind('\n').map_or(0, |i| i + 1)..].trim_end();
    let after = suffix.split('\n').next().unwrap_or_default().trim_end().trim_end_matches([';', ',']);
    let rest_is_closers = after.chars().all(|c| c.is_whitespace() || is_closer(c));
    if rest_is_closers && (before.is_empty() || opens_block(before)) { Mode::MultiLine } else { Mode::SingleLine }
}

fn opens_block(line: &str) -> bool {
    if line.ends_with("::") {
        return false;
    }
    if line.ends_with([':', '{', '(', '[']) || line.ends_with("=>") || line.ends_with("->") {
        return true;
    }
    let word_start = line.char_indices().rev().find(|&(_, c)| !is_ident(c)).map_or(0, |(i, c)| i + c.len_utf8());
    matches!(&line[word_start..], "do" | "then")
}

/// What to do after a decoding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Continue,
    /// The completion is `text[..at]`; `at` is a char boundary of the scanned text.
    Stop(usize),
}

/// Decides, token by token, where a completion ends:
/// - at the first configured stop string (the template's and the user's);
/// - single-line: at the first newline;
/// - multi-line: before the first line indented less than the block being completed (a new
///   statement after it), except that a closing-bracket line at the indentation of the line that
///   opened the block is kept and ends it; or before a run of two blank lines.
///
/// The first line of a completion continues the cursor's line, so its indentation is never judged.
/// Indentation counts a tab as four columns.
#[derive(Debug, Clone)]
pub struct StopScanner {
    stops: Vec<String>,
    /// Length of the longest stop string: a match can start up to this much less one byte before the
    /// end of the previous scan.
    longest: usize,
    mode: Mode,
    block: Block,
    /// Stop strings cannot start before this offset: everything earlier has been searched.
    searched: usize,
    /// Start of the first line not yet judged.
    line: usize,
    /// Whether that line is the completion's first one.
    first_line: bool,
    blank_run: usize,
    /// End of the last line with content: where a run of blank lines is cut.
    content_end: usize,
}

/// Files rarely mix tabs and spaces; when they do, four is the common editor setting.
const TAB_WIDTH: usize = 4;

/// The indentation rule of a multi-line completion.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Lines indented less than this leave the block.
    body: usize,
    /// Indentation of the line that opened the block: a closing line there still belongs to it.
    header: Option<usize>,
}

impl Block {
    fn at(prefix: &str) -> Block {
        let (before, line) = match prefix.rfind('\n') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        if line.trim().is_empty() {
            // On a blank line the cursor's column is the body's; the block's opener is the nearest line
            // above that is indented less.
            let body = indent_width(line);
            let header = before.lines().rev().filter(|l| !l.trim().is_empty()).map(indent_width).find(|&w| w < body);
            Block { body, header }
        } else {
            let header = indent_width(line);
            Block { body: header + 1, header: Some(header) }
        }
    }
}

impl StopScanner {
    /// `stops` are matched literally in the decoded text; empty ones are ignored.
    pub fn new(mode: Mode, prefix: &str, stops: &[&str]) -> StopScanner {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).map(|&s| String::from(s)).collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        StopScanner {
            stops,
            longest,
            mode,
            block: Block::at(prefix),
            searched: 0,
            line: 0,
            first_line: true,
            blank_run: 0,
            content_end: 0,
        }
    }

    /// Call with the whole decoded text after each token; each call's text must extend the previous
    /// one, so hold back a trailing incomplete UTF-8 sequence (as candle's `TokenOutputStream` does).
    /// Work per call is proportional to the new text, not to all of it. After `Stop` the completion is
    /// over and further calls mean nothing.
    pub fn scan(&mut self, text: &str) -> Scan {
        let by_string = self.find_stop_string(text);
        let by_line = match self.mode {
            Mode::SingleLine => text[self.line..].find('\n').map(|i| self.line + i),
            Mode::MultiLine => self.block_end(text),
        };
        if self.mode == Mode::SingleLine && by_line.is_none() {
            self.line = text.len();
        }
        match (by_string, by_line) {
            (Some(a), Some(b)) => Scan::Stop(a.min(b)),
            (Some(at), None) | (None, Some(at)) => Scan::Stop(at),
            (None, None) => Scan::Continue,
        }
    }

    fn find_stop_string(&mut self, text: &str) -> Option<usize> {
        let from = floor_char_boundary(text, self.searched.min(text.len()));
        let found = self.stops.iter().filter_map(|stop| text[from..].find(stop.as_str())).min().map(|i| from + i);
        self.searched = text.len().saturating_sub(self.longest.saturating_sub(1));
        found
    }

    fn block_end(&mut self, text: &str) -> Option<usize> {
        while let Some(len) = text[self.line..].find('\n') {
            let (start, end) = (self.line, self.line + len);
            if let Some(cut) = self.judge_line(&text[start..end], start, end) {
                return Some(cut);
            }
            self.line = end + 1;
            self.first_line = false;
        }
        // A line's indentation is known at its first visible character: cutting then saves decoding a
        // line that would be thrown away. Lines that may turn out to close the block wait for their end.
        let partial = &text[self.line..];
        let content = partial.trim_start();
        if !self.first_line && !content.is_empty() && indent_width(partial) < self.block.body && !may_close(content) {
            return Some(self.line - 1);
        }
        None
    }

    /// Judges the complete line `text[start..end]`; `Some` is where the completion ends.
    fn judge_line(&mut self, line: &str, start: usize, end: usize) -> Option<usize> {
        let content = line.trim();
        if self.first_line {
            if !content.is_empty() {
                self.content_end = end;
            }
            return None;
        }
        if content.is_empty() {
            self.blank_run += 1;
            return (self.blank_run >= 2).then_some(self.content_end);
        }
        self.blank_run = 0;
        let indent = indent_width(line);
        if indent < self.block.body {
            let closes_block = self.block.header == Some(indent) && is_closing_line(content);
            return Some(if closes_block { end } else { start - 1 });
        }
        self.content_end = end;
        None
    }
}

/// Turns a cut completion into the text to show, or `None` when it adds nothing:
/// 1. single-line mode keeps only the first line; trailing whitespace goes;
/// 2. the completion ends at its first closing bracket that closes nothing opened before it (counting
///    the brackets the prefix leaves open in the current top-level item) or closes the wrong kind;
/// 3. the longest end of the completion that repeats the start of the rest of the cursor's line is
///    cut (`foo(x))` before `)` becomes `foo(x)`), unless that leaves the brackets less balanced than
///    keeping it (`len(x)` before `)` stays); the whitespace before such an overlap is kept, since it
///    separates the completion from the text it runs into;
/// 4. otherwise, closing brackets at the end (with punctuation such as `;` among them) that the
///    suffix already provides after whitespace and newlines, as when an editor auto-closed a block,
///    are dropped;
/// 5. an empty or whitespace-only result, or one the suffix already starts with, is `None`.
pub fn finish(completion: &str, prefix: &str, suffix: &str, mode: Mode) -> Option<String> {
    let raw = match mode {
        Mode::SingleLine => completion.split('\n').next().unwrap_or_default(),
        Mode::MultiLine => completion,
    };
    let open = Open::at(prefix);
    let text = open.cut_unmatched(raw.trim_end()).trim_end();
    let rest_of_line = suffix.split('\n').next().unwrap_or_default().trim_end_matches('\r');
    let text = match open.trim_overlap(text, rest_of_line) {
        Some(trimmed) => trimmed,
        None => open.drop_provided_closers(text, suffix).trim_end(),
    };
    if text.trim().is_empty() || suffix.trim_start().starts_with(text.trim_start()) {
        return None;
    }
    Some(text.to_owned())
}

/// Brackets the prefix leaves open at the cursor, and the lexer state there (inside a string, say).
struct Open {
    stack: Vec<char>,
    lexer: Lexer,
}

impl Open {
    /// Scans from the start of the current top-level item (the last line starting in column 0), which
    /// bounds the work and the damage of the rough lexer.
    fn at(prefix: &str) -> Open {
        let item = prefix
            .match_indices('\n')
            .rev()
            .map(|(i, _)| i + 1)
            .find(|&start| prefix[start..].starts_with(|c: char| !c.is_whitespace()))
            .unwrap_or(0);
        let mut lexer = Lexer::default();
        let mut stack = Vec::new();
        for (_, c) in lexer.brackets(&prefix[item..]) {
            if !is_closer(c) {
                stack.push(c);
            } else if let Some(at) = stack.iter().rposition(|&open| pairs(open, c)) {
                // Recover from a stray opener (one inside a string the lexer missed, say) by closing
                // through it; a closer with no opener at all belongs to code before the item.
                stack.truncate(at);
            }
        }
        Open { stack, lexer }
    }

    /// `text` up to its first closing bracket that has no matching opener.
    fn cut_unmatched<'a>(&self, text: &'a str) -> &'a str {
        let mut stack = self.stack.clone();
        for (at, c) in self.lexer.clone().brackets(text) {
            if !is_closer(c) {
                stack.push(c);
            } else if stack.last().is_some_and(|&open| pairs(open, c)) {
                stack.pop();
            } else {
                return &text[..at];
            }
        }
        text
    }

    /// Closers without an opener plus openers left open, over the prefix's open brackets, `text`, and
    /// the rest of the line after it.
    fn imbalance(&self, text: &str, rest_of_line: &str) -> usize {
        let mut stack = self.stack.clone();
        let mut lexer = self.lexer.clone();
        let mut unmatched = 0;
        for chunk in [text, rest_of_line] {
            for (_, c) in lexer.brackets(chunk) {
                if !is_closer(c) {
                    stack.push(c);
                } else if stack.last().is_some_and(|&open| pairs(open, c)) {
                    stack.pop();
                } else {
                    unmatched += 1;
                }
            }
        }
        unmatched + stack.len()
    }

    /// `text` without its longest end that repeats the start of `rest_of_line`, if cutting it leaves
    /// the brackets no worse; `None` when nothing is cut.
    fn trim_overlap<'a>(&self, text: &'a str, rest_of_line: &str) -> Option<&'a str> {
        if rest_of_line.trim().is_empty() {
            return None;
        }
        let keeping = self.imbalance(text, rest_of_line);
        (1..=rest_of_line.len().min(text.len()))
            .rev()
            .filter(|&len| rest_of_line.is_char_boundary(len) && text.ends_with(&rest_of_line[..len]))
            .map(|len| &text[..text.len() - len])
            .find(|cut| self.imbalance(cut, rest_of_line) <= keeping)
    }

    /// `text` without a trailing run of closers (with any punctuation among them, as in `);` or `):`)
    /// that closes brackets the prefix opened and that the suffix repeats, ignoring whitespace.
    fn drop_provided_closers<'a>(&self, text: &'a str, suffix: &str) -> &'a str {
        let mut own_depth = 0usize;
        let mut prefix_closers = Vec::new();
        for (at, c) in self.lexer.clone().brackets(text) {
            if !is_closer(c) {
                own_depth += 1;
            } else if own_depth > 0 {
                own_depth -= 1;
            } else {
                prefix_closers.push(at);
            }
        }
        // Earliest first: the longest tail that qualifies wins.
        for at in prefix_closers {
            let tail = &text[at..];
            let no_words = !tail.chars().any(is_ident);
            if no_words && starts_with_ignoring_whitespace(suffix, tail) {
                return &text[..at];
            }
        }
        text
    }
}

/// Whether `text`, whitespace removed, starts with `start`, whitespace removed.
fn starts_with_ignoring_whitespace(text: &str, start: &str) -> bool {
    let mut text = text.chars().filter(|c| !c.is_whitespace());
    start.chars().filter(|c| !c.is_whitespace()).all(|c| text.next() == Some(c))
}

/// Enough lexing to find code brackets: skips `"…"` strings (with `\` escapes) and `//` and `#` line
/// comments (but not Rust's `#[…]` / `#![…]` attributes). Everything resets at a newline, so an
/// unclosed quote the lexer misread spoils one line at most.
#[derive(Debug, Clone, Default)]
struct Lexer {
    quoted: bool,
    escaped: bool,
    comment: bool,
    after_hash: bool,
    after_slash: bool,
}

impl Lexer {
    /// The brackets of `text` that are code, with their byte offsets. The state carries over to the
    /// next call, so text can be fed in pieces (prefix, then completion).
    fn brackets(&mut self, text: &str) -> Vec<(usize, char)> {
        let mut found = Vec::new();
        for (at, c) in text.char_indices() {
            if c == '\n' {
                *self = Lexer::default();
                continue;
            }
            if self.after_hash {
                self.after_hash = false;
                self.comment = c != '[' && c != '!';
            }
            if self.comment {
                continue;
            }
            if self.quoted {
                match c {
                    _ if self.escaped => self.escaped = false,
                    '\\' => self.escaped = true,
                    '"' => self.quoted = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.quoted = true,
                '#' => self.after_hash = true,
                '/' if self.after_slash => self.comment = true,
                '(' | '[' | '{' | ')' | ']' | '}' => found.push((at, c)),
                _ => {}
            }
            self.after_slash = c == '/';
        }
        found
    }
}

fn is_closer(c: char) -> bool {
    matches!(c, ')' | ']' | '}')
}

fn pairs(open: char, close: char) -> bool {
    matches!((open, close), ('(', ')') | ('[', ']') | ('{', '}'))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn indent_width(line: &str) -> usize {
    line.chars()
        .map_while(|c| match c {
            ' ' => Some(1),
            '\t' => Some(TAB_WIDTH),
            _ => None,
        })
        .sum()
}

/// Whether a line whose visible text so far is `content` may still turn out to be a closing line.
fn may_close(content: &str) -> bool {
    if content.starts_with(is_closer) {
        return true;
    }
    let word = &content[..content.find(|c: char| !is_ident(c)).unwrap_or(content.len())];
    if word.len() == content.len() { !word.is_empty() && "end".starts_with(word) } else { word == "end" }
}

/// A line that closes a block: it starts with a closing bracket, or with the word `end` (Ruby, Lua).
fn is_closing_line(content: &str) -> bool {
    content.starts_with(is_closer) || content.split(|c: char| !is_ident(c)).next() == Some("end")
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN_STOPS: &[&str] = &["<|endoftext|>", "<|file_sep|>", "<|fim_prefix|>"];

    /// Scans `text` as a decoder would produce it: one char boundary at a time.
    fn scan_incrementally(mode: Mode, prefix: &str, stops: &[&str], text: &str) -> Option<usize> {
        let mut scanner = StopScanner::new(mode, prefix, stops);
        let ends = text.char_indices().map(|(i, _)| i).skip(1).chain([text.len()]);
        ends.map(|end| scanner.scan(&text[..end])).find_map(|scan| match scan {
            Scan::Stop(at) => Some(at),
            Scan::Continue => None,
        })
    }

    fn scan_once(mode: Mode, prefix: &str, stops: &[&str], text: &str) -> Option<usize> {
        match StopScanner::new(mode, prefix, stops).scan(text) {
            Scan::Stop(at) => Some(at),
            Scan::Continue => None,
        }
    }

    /// Where decoding `text` would stop, checking that incremental and one-shot scans agree.
    fn cut<'a>(mode: Mode, prefix: &str, text: &'a str) -> &'a str {
        let incremental = scan_incrementally(mode, prefix, QWEN_STOPS, text);
        assert_eq!(incremental, scan_once(mode, prefix, QWEN_STOPS, text), "{text:?}");
        &text[..incremental.unwrap_or(text.len())]
    }

    #[test]
    fn mode_follows_the_cursor_context() {
        use Mode::*;
        let cases = [
            // Python
            ("def area(r):\n    ", "", MultiLine),
            ("def area(r):", "\n", MultiLine),
            ("    if r < 0:", "\n    return 0", MultiLine),
            ("total = compute(", ")", MultiLine),
            ("total = compute(", ")\n", MultiLine),
            ("total = 1 + ", "", SingleLine),
            ("print(\"héllo\", ", ")", SingleLine),
            ("total = compute(", "x)", SingleLine),
            ("", "", MultiLine),
            // Rust
            ("fn main() {", "\n}", MultiLine),
            ("    let v = vec![", "];", MultiLine),
            ("    match x {\n        Some(v) =>", "", MultiLine),
            ("fn f() ->", " {}", SingleLine),
            ("fn f() ->", "", MultiLine),
            ("use std::", ";", SingleLine),
            ("    let x = ", ";", SingleLine),
            ("    let 名前 = {", "};", MultiLine),
            // Ruby / Lua words, and words that only end like them
            ("items.each do", "", MultiLine),
            ("if ok then", "", MultiLine),
            ("undo", "", SingleLine),
            ("    ", "\r\n", MultiLine),
        ];
        for (prefix, suffix, mode) in cases {
            assert_eq!(mode_at(prefix, suffix), mode, "{prefix:?} | {suffix:?}");
        }
    }

    #[test]
    fn single_line_stops_at_the_first_newline() {
        assert_eq!(cut(Mode::SingleLine, "x = ", "compute(1)\ny = 2"), "compute(1)");
        assert_eq!(cut(Mode::SingleLine, "x = ", "\ny = 2"), "");
        assert_eq!(cut(Mode::SingleLine, "x = ", "compute(1)"), "compute(1)");
    }

    #[test]
    fn stop_strings_are_found_across_tokens() {
        let mut scanner = StopScanner::new(Mode::MultiLine, "def f():\n    ", QWEN_STOPS);
        let mut text = String::new();
        for token in ["ret", "urn 1", "<|end", "of", "text|>", "junk"] {
            text.push_str(token);
            if let Scan::Stop(at) = scanner.scan(&text) {
                assert_eq!(&text[..at], "return 1");
                return;
            }
        }
        panic!("never stopped");
    }

    #[test]
    fn stop_strings_after_multibyte_text_cut_on_a_char_boundary() {
        let text = "s = \"😀😀😀 naïve ç\"<|file_sep|>other.py";
        for mode in [Mode::SingleLine, Mode::MultiLine] {
            assert_eq!(cut(mode, "", text), "s = \"😀😀😀 naïve ç\"");
        }
        // Scanning positions fall inside the emoji while the longest stop string is being searched for.
        let emoji = "😀".repeat(20) + "<|endoftext|>";
        assert_eq!(cut(Mode::SingleLine, "", &emoji), "😀".repeat(20));
        assert_eq!(StopScanner::new(Mode::SingleLine, "", &["", "<|endoftext|>"]).scan("é"), Scan::Continue);
    }

    #[test]
    fn python_body_ends_at_the_next_top_level_statement() {
        let prefix = "import math\n\ndef area(r):\n    ";
        let text = "if r < 0:\n        return 0.0\n    return math.pi * r ** 2\n\ndef perimeter(r):\n    pass\n";
        assert_eq!(cut(Mode::MultiLine, prefix, text), "if r < 0:\n        return 0.0\n    return math.pi * r ** 2\n");
    }

    #[test]
    fn a_dedented_line_stops_decoding_at_its_first_character() {
        let prefix = "def area(r):\n    ";
        let mut scanner = StopScanner::new(Mode::MultiLine, prefix, &[]);
        assert_eq!(scanner.scan("return 1\n"), Scan::Continue);
        assert_eq!(scanner.scan("return 1\n\n"), Scan::Continue);
        assert_eq!(scanner.scan("return 1\n\nd"), Scan::Stop("return 1\n".len()));
    }

    #[test]
    fn python_block_after_an_opener_on_the_cursor_line() {
        let prefix = "class Shape:\n    def area(self):";
        let text = "\n        return self.w * self.h\n\n    def name(self):\n        return \"形\"\n";
        assert_eq!(cut(Mode::MultiLine, prefix, text), "\n        return self.w * self.h\n");
    }

    #[test]
    fn rust_block_keeps_its_closing_brace_and_stops_after_it() {
        let prefix = "fn main() {";
        let text = "\n    let x = 1;\n    println!(\"{x} ✓\");\n}\n\nfn other() {}\n";
        assert_eq!(cut(Mode::MultiLine, prefix, text), "\n    let x = 1;\n    println!(\"{x} ✓\");\n}");
    }

    #[test]
    fn rust_blank_line_inside_a_block_stops_before_the_outer_closer() {
        let prefix = "fn main() {\n    let v = vec![\n        1,\n        ";
        let text = "2,\n        3,\n    ];\n    println!(\"{v:?}\");\n}\n";
        assert_eq!(cut(Mode::MultiLine, prefix, text), "2,\n        3,\n    ];");
        // A closer at a shallower level than the block's opener is not the block's.
        let prefix = "impl A {\n    fn f(&self) {\n        ";
        assert_eq!(cut(Mode::MultiLine, prefix, "g();\n}\n"), "g();");
    }

    #[test]
    fn ruby_end_closes_the_block() {
        let prefix = "def greet(name)";
        let text = "\n  puts \"hi #{name}\"\nend\n\ndef other\nend\n";
        assert_eq!(cut(Mode::MultiLine, prefix, text), "\n  puts \"hi #{name}\"\nend");
        let mut scanner = StopScanner::new(Mode::MultiLine, prefix, &[]);
        assert_eq!(scanner.scan("\n  puts 1\ne"), Scan::Continue);
        assert_eq!(scanner.scan("\n  puts 1\nen"), Scan::Continue);
        assert_eq!(scanner.scan("\n  puts 1\nenv"), Scan::Stop("\n  puts 1".len()));
    }

    #[test]
    fn two_blank_lines_end_a_top_level_completion() {
        assert_eq!(cut(Mode::MultiLine, "", "x = 1\ny = 2\n\n\nz = 3"), "x = 1\ny = 2");
        assert_eq!(cut(Mode::MultiLine, "", "x = 1\n\ny = 2\n\n"), "x = 1\n\ny = 2\n\n");
        assert_eq!(cut(Mode::MultiLine, "def f():", "\n\n\n    return 1"), "");
        assert_eq!(cut(Mode::MultiLine, "", "x = 1\r\n\r\n\r\ny"), "x = 1\r");
    }

    #[test]
    fn incremental_and_one_shot_scans_agree() {
        let prefixes = ["", "def f(x):\n    ", "fn main() {", "    let v = vec![\n        ", "\tif x {\n\t\t"];
        let texts = [
            "return x\n\nprint(1)",
            "a\n    b\nc\n",
            "\n    let é = 1;\n}\nfn g() {}",
            "1,\n    ];\nx",
            "y();\n\t}\n",
            "a<|endoftext|>b\nc",
            "😀\n😀\n\n\n😀",
            "x\n\t\ty\n\tz\n",
        ];
        for prefix in prefixes {
            for text in texts {
                for mode in [Mode::SingleLine, Mode::MultiLine] {
                    let at = scan_incrementally(mode, prefix, QWEN_STOPS, text);
                    assert_eq!(at, scan_once(mode, prefix, QWEN_STOPS, text), "{prefix:?} {text:?}");
                    assert!(at.is_none_or(|at| text.is_char_boundary(at)));
                }
            }
        }
    }

    #[test]
    fn overlap_with_the_rest_of_the_line_is_trimmed() {
        let single = |completion, prefix, suffix| finish(completion, prefix, suffix, Mode::SingleLine);
        assert_eq!(single("foo(x))", "result = bar(", ")\n").as_deref(), Some("foo(x)"));
        assert_eq!(single("len(x)", "print(", ")").as_deref(), Some("len(x)"));
        assert_eq!(single("héllo wörld\"", "name = \"", "\"\n").as_deref(), Some("héllo wörld"));
        assert_eq!(single("にちは\")", "print(\"こん", "\")").as_deref(), Some("にちは"));
        assert_eq!(single("a + b", "x = ", " + b  # sum\n").as_deref(), Some("a"));
        assert_eq!(single("1, 2]", "v = [", "];").as_deref(), Some("1, 2"));
        assert_eq!(single("\")\" + x)", "print(", ")").as_deref(), Some("\")\" + x"));
    }

    #[test]
    fn whitespace_before_an_overlap_is_kept() {
        let completion = "\n        a,\n        b,\n    )";
        let finished = finish(completion, "    result = compute(", ")\n", Mode::MultiLine);
        assert_eq!(finished.as_deref(), Some("\n        a,\n        b,\n    "));
    }

    #[test]
    fn closers_that_close_nothing_are_cut() {
        let single = |completion, prefix, suffix| finish(completion, prefix, suffix, Mode::SingleLine);
        assert_eq!(single("2)", "x = 1 + ", "").as_deref(), Some("2"));
        assert_eq!(single(", 3)]", "v = [1, 2", "").as_deref(), Some(", 3"));
        // Brackets in comments and strings of the prefix are not open brackets.
        let prefix = "def f():\n    # see (a\n    s = \"(\"\n    return g(";
        assert_eq!(single("1))", prefix, "").as_deref(), Some("1)"));
        // A call opened on an earlier line may be closed on this one.
        let prefix = "fn main() {\n    #[allow(unused)]\n    let x = foo(\n        a,\n        ";
        assert_eq!(single("b);", prefix, "\n}").as_deref(), Some("b);"));
        assert_eq!(single("b);}", prefix, "\n}").as_deref(), Some("b);"));
    }

    #[test]
    fn closers_the_suffix_already_has_are_dropped() {
        let multi = |completion, prefix, suffix| finish(completion, prefix, suffix, Mode::MultiLine);
        let body = "\n    println!(\"hi ✓\");\n}";
        assert_eq!(multi(body, "fn main() {", "\n}\n").as_deref(), Some("\n    println!(\"hi ✓\");"));
        // At the end of the file nothing provides the brace, so it stays.
        assert_eq!(multi(body, "fn main() {", "").as_deref(), Some(body));
        let prefix = "fn main() {\n    let v = vec![\n        1,\n        ";
        assert_eq!(multi("2,\n        3,\n    ];", prefix, "\n    ];\n}\n").as_deref(), Some("2,\n        3,"));
        // Only part of the closers is provided: keep them all rather than leave a stray `;`.
        assert_eq!(multi("2,\n    ];", prefix, "\n    ]\n}").as_deref(), Some("2,\n    ];"));
        let prefix = "def f(\n    a,\n    ";
        assert_eq!(multi("b,\n):", prefix, "\n):\n    pass").as_deref(), Some("b,"));
    }

    #[test]
    fn nothing_useful_is_none() {
        assert_eq!(finish("", "x = ", "", Mode::SingleLine), None);
        assert_eq!(finish("   \n  \t", "x = ", "", Mode::MultiLine), None);
        assert_eq!(finish("\nprint(x)", "x = 1", "", Mode::SingleLine), None);
        assert_eq!(finish(")", "print(x", ")", Mode::SingleLine), None);
        assert_eq!(finish("    return 1", "def f():\n", "    return 1\n", Mode::MultiLine), None);
        assert_eq!(finish("名前", "x = ", "名前\n", Mode::SingleLine), None);
    }

    #[test]
    fn single_line_keeps_the_first_line_and_trailing_whitespace_goes() {
        assert_eq!(finish("x + 1  \nprint(x)", "y = ", "", Mode::SingleLine).as_deref(), Some("x + 1"));
        assert_eq!(finish("foo()   \n\n", "    ", "", Mode::MultiLine).as_deref(), Some("foo()"));
        assert_eq!(finish("\n    return 1\n", "def f():", "", Mode::MultiLine).as_deref(), Some("\n    return 1"));
    }
}
