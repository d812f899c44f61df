//! Prompt construction for fill-in-the-middle (FIM) completion.
//!
//! [`Template::detect`] picks the format from the tokenizer's special tokens; [`build`] fits the text
//! around the cursor and the cross-file context into a token budget and renders it. The formats follow
//! the model authors' own documentation:
//!
//! - Qwen2.5-Coder (README "File-Level Code Completion", technical report figure 4 "Repo-Level FIM"):
//!   `<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>`, and with context
//!   `<|repo_name|>{repo}\n<|file_sep|>{path}\n{content}\n…<|file_sep|>{path}\n<|fim_prefix|>…<|fim_middle|>`.
//! - DeepSeek-Coder (README "Code Insertion", "Repository Level Code Completion"):
//!   `<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>`; context files go before the prefix
//!   as `#{path}\n{content}\n`, the README's repo-level layout.
//! - CodeLlama (transformers' CodeLlama docs, Meta's `infilling_prompt_tokens`):
//!   `<PRE> {prefix} <SUF>{suffix} <MID>`.
//! - Models without FIM tokens get the context and then the prefix; the suffix cannot be used.
//!
//! Context is the caller's list of other open files (most relevant first) plus recent edits (most
//! recent first). The edits become one pseudo-file, `recent_edits.diff`, holding unified-diff-like
//! text: code models have seen many diffs, and as a file it fits every template's context layout
//! unchanged. Context is chosen in the caller's order but rendered in reverse, so that the most
//! relevant item (the edits first of all) ends up next to the cursor, where small models attend most.

use std::ops::Range;

use fit::{fit_head, fit_tail, fit_tail_stable};

mod fit;

const QWEN_FIM: [&str; 3] = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"];
const QWEN_REPO_NAME: &str = "<|repo_name|>";
const QWEN_FILE_SEP: &str = "<|file_sep|>";
const DEEPSEEK_FIM: [&str; 3] = ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"];
/// CodeLlama's sentinels carry SentencePiece's word-boundary mark in its tokenizer.json and GGUF
/// vocabularies; llama.cpp also accepts the bare spelling, so detection does too.
const CODELLAMA_FIM: [&str; 3] = ["▁<PRE>", "▁<SUF>", "▁<MID>"];
const CODELLAMA_FIM_BARE: [&str; 3] = ["<PRE>", "<SUF>", "<MID>"];

/// Path of the pseudo-file that carries the recent edits.
const EDITS_PATH: &str = "recent_edits.diff";
/// Qwen's repo-level format always names a repository; this stands in when the caller has none.
const DEFAULT_REPO_NAME: &str = "project";

/// A prompt format, chosen from the special tokens of the model's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    QwenFim,
    DeepSeekFim,
    CodeLlamaFim,
    /// No FIM tokens: the model only continues the prefix.
    PrefixOnly,
}

impl Template {
    /// `has_special(s)` must say whether `s` is a single token of the vocabulary (for a `tokenizers`
    /// tokenizer: `token_to_id(s).is_some()`); DeepSeek-Coder's FIM tokens are added tokens that are
    /// not flagged special, so asking only about "special" tokens would miss them. Qwen wins when a
    /// vocabulary has several sets (distilled models keep their base model's tokens).
    pub fn detect(has_special: impl Fn(&str) -> bool) -> Template {
        let has_all = |tokens: &[&str]| tokens.iter().all(|t| has_special(t));
        if has_all(&QWEN_FIM) {
            Template::QwenFim
        } else if has_all(&DEEPSEEK_FIM) {
            Template::DeepSeekFim
        } else if has_all(&CODELLAMA_FIM) || has_all(&CODELLAMA_FIM_BARE) {
            Template::CodeLlamaFim
        } else {
            Template::PrefixOnly
        }
    }

    /// Text that ends a completion when it shows up in the decoded output (decode without skipping
    /// special tokens). The sentinels of the template itself are included: a model that emits them is
    /// starting another document. The engine should also stop on the tokenizer's EOS id.
    pub fn stop_strings(&self) -> &'static [&'static str] {
        match self {
            Template::QwenFim => &[
                "<|endoftext|>",
                "<|fim_pad|>",
                "<|file_sep|>",
                "<|repo_name|>",
                "<|fim_prefix|>",
                "<|fim_suffix|>",
                "<|fim_middle|>",
                "<|im_end|>",
            ],
            Template::DeepSeekFim => {
                &["<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]
            }
            // Decoding `▁<EOT>` gives " <EOT>": matching the bare text covers both spellings.
            Template::CodeLlamaFim => &["<EOT>", "</s>", "<PRE>", "<SUF>", "<MID>"],
            Template::PrefixOnly => &["<|endoftext|>", "<|im_end|>", "</s>", "<|end_of_text|>", "<|eot_id|>"],
        }
    }
}

/// Another file offered as context, e.g. one open in the editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextFile<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

/// A recent edit: the lines `before` became the lines `after` in `path`. Keep both to the changed
/// lines (a hunk), not whole files: each edit is kept or dropped as a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentEdit<'a> {
    pub path: &'a str,
    pub before: &'a str,
    pub after: &'a str,
}

/// Everything the prompt is built from. Borrowed, since it is rebuilt on every keystroke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptInput<'a> {
    /// Path of the file being edited, relative to the repository root (the models were trained on
    /// repository-relative paths).
    pub path: &'a str,
    /// Text before the cursor.
    pub prefix: &'a str,
    /// Text after the cursor.
    pub suffix: &'a str,
    pub repo_name: Option<&'a str>,
    /// Most relevant first; should not include the current file. Each text is counted whole on every
    /// call, so a caller with large files should memoize its counter (`count::Counter` does) or
    /// pre-trim them.
    pub open_files: &'a [ContextFile<'a>],
    /// Most recent first.
    pub recent_edits: &'a [RecentEdit<'a>],
}

/// How many tokens the prompt may take, and how they are shared.
///
/// The shares are relative weights between the prefix, the suffix and the context. A part that needs
/// less than its share gives the rest to the others in proportion to their shares; a zero share turns
/// a part off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Upper bound on the whole prompt by the caller's counter. The caller leaves room within the
    /// model's context length for the generated tokens and for a BOS token its tokenizer adds.
    pub max_prompt_tokens: usize,
    pub prefix_share: u32,
    pub suffix_share: u32,
    pub context_share: u32,
}

impl Default for Budget {
    fn default() -> Budget {
        // A cold prefill of 1024 tokens takes a 1.5B model about 10 s on two cores (DESIGN §5); prefix
        // KV reuse makes later keystrokes cheap, but every cache miss pays for a longer prompt.
        Budget { max_prompt_tokens: 1024, prefix_share: 60, suffix_share: 20, context_share: 20 }
    }
}

/// A rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    /// The size of `text` by the counter passed to [`build`].
    pub tokens: usize,
    /// Where the template's sentinels are in `text`, and the vocabulary token each one stands for.
    specials: Vec<(Range<usize>, &'static str)>,
}

/// A piece of a [`Prompt`], for tokenizing sentinels by id and everything else as plain text.
///
/// Tokenizing `text` in one go would also turn sentinel-like text inside the user's files (say, a
/// source file that mentions `<|endoftext|>`) into control tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A vocabulary token, spelled as in the vocabulary. CodeLlama's are `▁<PRE>`, `▁<SUF>`,
    /// `▁<MID>`; look up the bare `<PRE>` form for a vocabulary that spells them that way.
    Special(&'static str),
    /// Text to tokenize without special-token parsing and without a leading dummy space.
    Text(&'a str),
}

impl Prompt {
    /// The prompt in order as sentinels and text; the sentinels' shown forms and the text pieces
    /// concatenate to `text`.
    pub fn segments(&self) -> Vec<Segment<'_>> {
        let mut out = Vec::with_capacity(2 * self.specials.len() + 1);
        let mut at = 0;
        for (range, token) in &self.specials {
            if range.start > at {
                out.push(Segment::Text(&self.text[at..range.start]));
            }
            out.push(Segment::Special(token));
            at = range.end;
        }
        if at < self.text.len() {
            out.push(Segment::Text(&self.text[at..]));
        }
        out
    }
}

/// Builds the prompt for `input` within `budget`, counting tokens with `count`.
///
/// Truncation keeps what is nearest the cursor: the end of the prefix and the start of the suffix,
/// cut at line boundaries unless not even one line fits. Context items are taken whole, in the
/// caller's order, skipping any that no longer fit. The result never exceeds
/// `budget.max_prompt_tokens` by `count`, unless the bare template (empty prefix and suffix) already
/// does. Parts are counted separately, so a final count of the whole text catches tokens that merge
/// or split at the seams and trims further.
pub fn build(template: Template, input: &PromptInput<'_>, budget: &Budget, count: &dyn Fn(&str) -> usize) -> Prompt {
    let suffix = if template == Template::PrefixOnly { "" } else { input.suffix };
    let bare = Parts { prefix: "", suffix: "", files: Vec::new(), edits: Vec::new() };
    let avail = budget.max_prompt_tokens.saturating_sub(count(&render(template, input, &bare).text));

    // A context file the window around the cursor already shows (a function a few lines up) is not
    // repeated: the prefix and suffix get at least their shares of what is available.
    let total_share = (budget.prefix_share + budget.suffix_share + budget.context_share).max(1) as usize;
    let near_prefix = fit_tail(input.prefix, avail * budget.prefix_share as usize / total_share, count);
    let near_suffix = fit_head(suffix, avail * budget.suffix_share as usize / total_share, count);
    let fresh: Vec<ContextFile<'_>> = input
        .open_files
        .iter()
        .filter(|f| !(near_prefix.contains(f.text.trim()) || near_suffix.contains(f.text.trim())))
        .copied()
        .collect();
    let input = &PromptInput { open_files: &fresh, ..*input };
    let costs = ContextCosts::new(template, input, count);
    let prefix_need = count(fit_tail(input.prefix, avail, count));
    let suffix_need = count(fit_head(suffix, avail, count));
    let shares = [budget.prefix_share, budget.suffix_share, budget.context_share];
    let [_, _, context_alloc] = water_fill(avail, shares, [prefix_need, suffix_need, costs.total().min(avail)]);
    let chosen = costs.select(input, context_alloc);
    // The context rarely fills its allocation exactly; what it leaves goes back to the file itself.
    let [prefix_alloc, suffix_alloc, _] =
        water_fill(avail - chosen.used, [shares[0], shares[1], 0], [prefix_need, suffix_need, 0]);

    let mut parts = Parts {
        prefix: fit_tail_stable(input.prefix, prefix_alloc, count),
        suffix: fit_head(suffix, suffix_alloc, count),
        files: chosen.files,
        edits: chosen.edits,
    };
    loop {
        let rendered = render(template, input, &parts);
        let tokens = count(&rendered.text);
        let over = tokens.saturating_sub(budget.max_prompt_tokens);
        if over == 0 || !parts.shrink(over, count) {
            return Prompt { text: rendered.text, tokens, specials: rendered.specials };
        }
    }
}

/// What goes into one rendering. `files` and `edits` are in the caller's order (most relevant first).
struct Parts<'a> {
    prefix: &'a str,
    suffix: &'a str,
    files: Vec<ContextFile<'a>>,
    edits: Vec<RecentEdit<'a>>,
}

impl Parts<'_> {
    /// Takes at least `over` tokens off, least valuable first: the far end of the prefix, then the
    /// least relevant context, then the far end of the suffix. False when nothing is left to take.
    fn shrink(&mut self, over: usize, count: &dyn Fn(&str) -> usize) -> bool {
        // Each step strictly shortens a part (a refit asks for fewer tokens than the part has), so the
        // caller's loop ends.
        if !self.prefix.is_empty() {
            self.prefix = fit_tail(self.prefix, count(self.prefix).saturating_sub(over), count);
            true
        } else if self.files.pop().is_some() || self.edits.pop().is_some() {
            true
        } else if !self.suffix.is_empty() {
            self.suffix = fit_head(self.suffix, count(self.suffix).saturating_sub(over), count);
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct Rendered {
    text: String,
    specials: Vec<(Range<usize>, &'static str)>,
}

impl Rendered {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn special(&mut self, token: &'static str) {
        self.special_shown(token, token);
    }

    /// A sentinel whose conventional text differs from its vocabulary spelling (CodeLlama's).
    fn special_shown(&mut self, shown: &str, token: &'static str) {
        let start = self.text.len();
        self.text.push_str(shown);
        self.specials.push((start..self.text.len(), token));
    }

    /// The part of the context that surrounds the items (see [`ContextCosts::frame`]).
    fn frame_head(&mut self, template: Template, input: &PromptInput<'_>) {
        if template == Template::QwenFim {
            self.special(QWEN_REPO_NAME);
            self.push(input.repo_name.unwrap_or(DEFAULT_REPO_NAME));
            self.push("\n");
        }
    }

    fn frame_tail(&mut self, template: Template, input: &PromptInput<'_>) {
        match template {
            Template::QwenFim => {
                self.special(QWEN_FILE_SEP);
                self.push(input.path);
                self.push("\n");
            }
            Template::DeepSeekFim => {
                self.push("#");
                self.push(input.path);
                self.push("\n");
            }
            Template::CodeLlamaFim | Template::PrefixOnly => {}
        }
    }

    fn item(&mut self, template: Template, path: &str, content: &str) {
        match template {
            Template::QwenFim => {
                self.special(QWEN_FILE_SEP);
                self.push(path);
                self.push("\n");
            }
            Template::DeepSeekFim => {
                self.push("#");
                self.push(path);
                self.push("\n");
            }
            // Models without repository training see plain concatenated code; a path header in some
            // comment syntax could be wrong for the language.
            Template::CodeLlamaFim | Template::PrefixOnly => {}
        }
        self.push(content);
        self.push("\n");
    }

    fn context(&mut self, template: Template, input: &PromptInput<'_>, parts: &Parts<'_>) {
        if parts.files.is_empty() && parts.edits.is_empty() {
            return;
        }
        self.frame_head(template, input);
        for file in parts.files.iter().rev() {
            self.item(template, file.path, file.text);
        }
        if !parts.edits.is_empty() {
            self.item(template, EDITS_PATH, &render_edits(&parts.edits));
        }
        self.frame_tail(template, input);
    }
}

fn render(template: Template, input: &PromptInput<'_>, parts: &Parts<'_>) -> Rendered {
    let mut out = Rendered::default();
    match template {
        Template::QwenFim => {
            out.context(template, input, parts);
            out.special(QWEN_FIM[0]);
            out.push(parts.prefix);
            out.special(QWEN_FIM[1]);
            out.push(parts.suffix);
            out.special(QWEN_FIM[2]);
        }
        Template::DeepSeekFim => {
            // The context is text before the hole, so it goes after the begin token, which the README
            // puts first.
            out.special(DEEPSEEK_FIM[0]);
            out.context(template, input, parts);
            out.push(parts.prefix);
            out.special(DEEPSEEK_FIM[1]);
            out.push(parts.suffix);
            out.special(DEEPSEEK_FIM[2]);
        }
        Template::CodeLlamaFim => {
            // The spaces belong to the sentinels (`▁<SUF>` decodes as " <SUF>"), except the one after
            // `<PRE>`: that is the prefix's own leading word boundary, as CodeLlama's tokenizer adds it.
            out.special_shown("<PRE>", CODELLAMA_FIM[0]);
            out.push(" ");
            out.context(template, input, parts);
            out.push(parts.prefix);
            out.special_shown(" <SUF>", CODELLAMA_FIM[1]);
            out.push(parts.suffix);
            out.special_shown(" <MID>", CODELLAMA_FIM[2]);
        }
        Template::PrefixOnly => {
            out.context(template, input, parts);
            out.push(parts.prefix);
        }
    }
    out
}

/// One edit as diff lines, ending with a newline.
fn render_edit(edit: &RecentEdit<'_>) -> String {
    let mut out = format!("--- {0}\n+++ {0}\n", edit.path);
    for (sign, text) in [('-', edit.before), ('+', edit.after)] {
        for line in text.lines() {
            out.push(sign);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The edits pseudo-file: oldest first, so the latest edit sits nearest the cursor.
fn render_edits(edits: &[RecentEdit<'_>]) -> String {
    let mut out: String = edits.iter().rev().map(render_edit).collect();
    // The item wrapper adds the file's final newline.
    out.pop();
    out
}

/// Token costs of the context pieces, each counted once per build.
struct ContextCosts {
    /// What surrounds the items: Qwen's repository header and the current file's separator line,
    /// DeepSeek's current-file path line.
    frame: usize,
    /// The edits pseudo-file's own header, paid once when any edit is taken.
    edits_wrapper: usize,
    edits: Vec<usize>,
    files: Vec<usize>,
}

struct Chosen<'a> {
    files: Vec<ContextFile<'a>>,
    edits: Vec<RecentEdit<'a>>,
    used: usize,
}

impl ContextCosts {
    fn new(template: Template, input: &PromptInput<'_>, count: &dyn Fn(&str) -> usize) -> ContextCosts {
        if input.open_files.is_empty() && input.recent_edits.is_empty() {
            return ContextCosts { frame: 0, edits_wrapper: 0, edits: Vec::new(), files: Vec::new() };
        }
        let cost = |fill: &dyn Fn(&mut Rendered)| {
            let mut out = Rendered::default();
            fill(&mut out);
            count(&out.text)
        };
        ContextCosts {
            frame: cost(&|out| {
                out.frame_head(template, input);
                out.frame_tail(template, input);
            }),
            edits_wrapper: cost(&|out| out.item(template, EDITS_PATH, "")),
            edits: input.recent_edits.iter().map(|edit| count(&render_edit(edit))).collect(),
            files: input.open_files.iter().map(|file| cost(&|out| out.item(template, file.path, file.text))).collect(),
        }
    }

    fn total(&self) -> usize {
        if self.edits.is_empty() && self.files.is_empty() {
            return 0;
        }
        let edits = if self.edits.is_empty() { 0 } else { self.edits_wrapper + self.edits.iter().sum::<usize>() };
        self.frame + edits + self.files.iter().sum::<usize>()
    }

    /// Edits first (they are the freshest signal of what the user is doing), then files; each whole,
    /// in the caller's order, skipping what does not fit what is left.
    fn select<'a>(&self, input: &PromptInput<'a>, alloc: usize) -> Chosen<'a> {
        let mut chosen = Chosen { files: Vec::new(), edits: Vec::new(), used: 0 };
        let Some(mut left) = alloc.checked_sub(self.frame) else { return chosen };
        for (edit, &cost) in input.recent_edits.iter().zip(&self.edits) {
            let cost = if chosen.edits.is_empty() { cost + self.edits_wrapper } else { cost };
            if cost <= left {
                left -= cost;
                chosen.edits.push(*edit);
            }
        }
        for (file, &cost) in input.open_files.iter().zip(&self.files) {
            if cost <= left {
                left -= cost;
                chosen.files.push(*file);
            }
        }
        if !chosen.files.is_empty() || !chosen.edits.is_empty() {
            chosen.used = alloc - left;
        }
        chosen
    }
}

/// Splits `avail` by `shares`; a part needing less than its share gets its need, and the surplus is
/// split again among the others.
fn water_fill(avail: usize, shares: [u32; 3], needs: [usize; 3]) -> [usize; 3] {
    let mut alloc = [0; 3];
    let mut hungry: Vec<usize> = (0..3).filter(|&i| shares[i] > 0 && needs[i] > 0).collect();
    let mut left = avail;
    while !hungry.is_empty() && left > 0 {
        let total: u128 = hungry.iter().map(|&i| u128::from(shares[i])).sum();
        let fair = |i: usize| (left as u128 * u128::from(shares[i]) / total) as usize;
        let sated: Vec<usize> = hungry.iter().copied().filter(|&i| needs[i] <= fair(i)).collect();
        if sated.is_empty() {
            let fairs: Vec<usize> = hungry.iter().map(|&i| fair(i)).collect();
            for (&i, &share) in hungry.iter().zip(&fairs) {
                alloc[i] = share;
            }
            // Integer rounding leaves a few tokens; the first hungry part (the prefix when it is
            // hungry) takes them, up to its need.
            let first = hungry[0];
            alloc[first] += (left - fairs.iter().sum::<usize>()).min(needs[first] - alloc[first]);
            break;
        }
        for &i in &sated {
            alloc[i] = needs[i];
            left -= needs[i];
        }
        hungry.retain(|i| !sated.contains(i));
    }
    alloc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str) -> usize {
        text.chars().count()
    }

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    /// Grows faster than the sum of its parts, so only the final whole-text check keeps the bound.
    fn superadditive(text: &str) -> usize {
        let n = text.chars().count();
        n + n * n / 300
    }

    const BIG: Budget = Budget { max_prompt_tokens: 1 << 20, prefix_share: 60, suffix_share: 20, context_share: 20 };

    fn input<'a>(prefix: &'a str, suffix: &'a str) -> PromptInput<'a> {
        PromptInput { path: "src/app.py", prefix, suffix, repo_name: None, open_files: &[], recent_edits: &[] }
    }

    fn vocab(tokens: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |t: &str| tokens.contains(&t)
    }

    /// What sits in the prefix and suffix slots: between the last three sentinels of a FIM template,
    /// or the whole text for prefix-only.
    fn slots(prompt: &Prompt) -> (String, String) {
        let segments = prompt.segments();
        let specials: Vec<usize> =
            segments.iter().enumerate().filter(|(_, s)| matches!(s, Segment::Special(_))).map(|(i, _)| i).collect();
        let [.., pre, suf, mid] = specials[..] else { return (prompt.text.clone(), String::new()) };
        let slot = |from: usize, to: usize| {
            segments[from + 1..to]
                .iter()
                .map(|s| match s {
                    Segment::Text(t) => *t,
                    Segment::Special(t) => t,
                })
                .collect::<String>()
        };
        (slot(pre, suf), slot(suf, mid))
    }

    #[test]
    fn detects_each_template_from_the_vocabulary() {
        let qwen = vocab(&["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"]);
        assert_eq!(Template::detect(qwen), Template::QwenFim);
        let deepseek = vocab(&["<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]);
        assert_eq!(Template::detect(deepseek), Template::DeepSeekFim);
        assert_eq!(Template::detect(vocab(&["</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"])), Template::CodeLlamaFim);
        assert_eq!(Template::detect(vocab(&["<PRE>", "<SUF>", "<MID>"])), Template::CodeLlamaFim);
        assert_eq!(Template::detect(vocab(&["<|endoftext|>", "<|im_start|>", "<|im_end|>"])), Template::PrefixOnly);
        // ASCII bars are not DeepSeek's full-width ones, and an incomplete set is no set.
        assert_eq!(Template::detect(vocab(&["<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"])), Template::PrefixOnly);
        assert_eq!(Template::detect(vocab(&["<|fim_prefix|>", "<|fim_middle|>"])), Template::PrefixOnly);
    }

    #[test]
    fn qwen_wins_when_several_sets_are_present() {
        let both = vocab(&[
            "<｜fim▁begin｜>",
            "<｜fim▁hole｜>",
            "<｜fim▁end｜>",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
        ]);
        assert_eq!(Template::detect(both), Template::QwenFim);
    }

    #[test]
    fn stop_strings_include_each_models_end_markers() {
        assert!(Template::QwenFim.stop_strings().contains(&"<|endoftext|>"));
        assert!(Template::QwenFim.stop_strings().contains(&"<|file_sep|>"));
        assert!(Template::DeepSeekFim.stop_strings().contains(&"<｜end▁of▁sentence｜>"));
        assert!(Template::DeepSeekFim.stop_strings().contains(&"<|EOT|>"));
        assert!(Template::CodeLlamaFim.stop_strings().contains(&"<EOT>"));
        for template in [Template::QwenFim, Template::DeepSeekFim, Template::CodeLlamaFim, Template::PrefixOnly] {
            assert!(template.stop_strings().iter().all(|s| !s.is_empty()));
        }
    }

    #[test]
    fn qwen_file_level_fim() {
        let prompt = build(Template::QwenFim, &input("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"), &BIG, &chars);
        assert_eq!(prompt.text, "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>");
        assert_eq!(prompt.tokens, chars(&prompt.text));
    }

    #[test]
    fn qwen_repo_level_with_files_and_edits() {
        let files = [
            ContextFile { path: "src/util.py", text: "def helper():\n    return 1" },
            ContextFile { path: "src/db.py", text: "import sqlite3" },
        ];
        let edits = [
            RecentEdit { path: "src/app.py", before: "x = 1", after: "x = helper()" },
            RecentEdit { path: "src/util.py", before: "", after: "def helper():" },
        ];
        let input = PromptInput {
            path: "src/app.py",
            prefix: "from util import helper\nx = ",
            suffix: "\nprint(x)",
            repo_name: Some("demo"),
            open_files: &files,
            recent_edits: &edits,
        };
        let prompt = build(Template::QwenFim, &input, &BIG, &chars);
        let expected = "<|repo_name|>demo\n\
            <|file_sep|>src/db.py\nimport sqlite3\n\
            <|file_sep|>src/util.py\ndef helper():\n    return 1\n\
            <|file_sep|>recent_edits.diff\n\
            --- src/util.py\n+++ src/util.py\n+def helper():\n\
            --- src/app.py\n+++ src/app.py\n-x = 1\n+x = helper()\n\
            <|file_sep|>src/app.py\n\
            <|fim_prefix|>from util import helper\nx = <|fim_suffix|>\nprint(x)<|fim_middle|>";
        assert_eq!(prompt.text, expected);
    }

    #[test]
    fn qwen_repo_level_without_a_repo_name_uses_a_placeholder() {
        let files = [ContextFile { path: "a.rs", text: "fn a() {}" }];
        let input = PromptInput { open_files: &files, ..input("fn b() {", "}") };
        let prompt = build(Template::QwenFim, &input, &BIG, &chars);
        assert!(prompt.text.starts_with("<|repo_name|>project\n<|file_sep|>a.rs\nfn a() {}\n<|file_sep|>src/app.py\n"));
    }

    #[test]
    fn deepseek_fim_with_and_without_context() {
        let plain = build(Template::DeepSeekFim, &input("def f(x):\n", "\n    return y"), &BIG, &chars);
        assert_eq!(plain.text, "<｜fim▁begin｜>def f(x):\n<｜fim▁hole｜>\n    return y<｜fim▁end｜>");

        let files = [ContextFile { path: "utils.py", text: "def load():\n    pass" }];
        let input = PromptInput { open_files: &files, ..input("load", "") };
        let prompt = build(Template::DeepSeekFim, &input, &BIG, &chars);
        assert_eq!(
            prompt.text,
            "<｜fim▁begin｜>#utils.py\ndef load():\n    pass\n#src/app.py\nload<｜fim▁hole｜><｜fim▁end｜>"
        );
    }

    #[test]
    fn codellama_fim_spacing_and_sentinels() {
        let prompt = build(
            Template::CodeLlamaFim,
            &input("def remove_non_ascii(s):\n    \"\"\" ", "\n    return result\n"),
            &BIG,
            &chars,
        );
        assert_eq!(prompt.text, "<PRE> def remove_non_ascii(s):\n    \"\"\"  <SUF>\n    return result\n <MID>");
        assert_eq!(
            prompt.segments(),
            [
                Segment::Special("▁<PRE>"),
                Segment::Text(" def remove_non_ascii(s):\n    \"\"\" "),
                Segment::Special("▁<SUF>"),
                Segment::Text("\n    return result\n"),
                Segment::Special("▁<MID>"),
            ]
        );
    }

    #[test]
    fn prefix_only_drops_the_suffix_and_concatenates_context() {
        let files = [ContextFile { path: "lib.rs", text: "pub fn one() -> u32 { 1 }" }];
        let input = PromptInput { open_files: &files, ..input("fn main() {\n    let x = ", ";\n}\n") };
        let prompt = build(Template::PrefixOnly, &input, &BIG, &chars);
        assert_eq!(prompt.text, "pub fn one() -> u32 { 1 }\nfn main() {\n    let x = ");
        assert!(prompt.segments().iter().all(|s| matches!(s, Segment::Text(_))));
    }

    #[test]
    fn sentinel_text_inside_user_files_stays_text() {
        let files = [ContextFile { path: "notes.md", text: "the <|endoftext|> token" }];
        let input = PromptInput { open_files: &files, ..input("s = '<|fim_middle|>'", "") };
        let prompt = build(Template::QwenFim, &input, &BIG, &chars);
        let segments = prompt.segments();
        let specials: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Special(t) => Some(*t),
                Segment::Text(_) => None,
            })
            .collect();
        assert_eq!(
            specials,
            ["<|repo_name|>", "<|file_sep|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
        );
        let joined: String = segments
            .iter()
            .map(|s| match s {
                Segment::Special(t) => t,
                Segment::Text(t) => *t,
            })
            .collect();
        assert_eq!(joined, prompt.text);
    }

    /// `n` numbered lines, with some multi-byte characters.
    fn lines(tag: &str, n: usize) -> String {
        (0..n).map(|i| format!("{tag}{i:04} = \"ünï\"\n")).collect()
    }

    #[test]
    fn truncation_keeps_the_text_nearest_the_cursor_at_line_boundaries() {
        let prefix = lines("before", 200);
        let suffix = lines("after", 200);
        let budget = Budget { max_prompt_tokens: 600, ..Budget::default() };
        let prompt = build(Template::QwenFim, &input(&prefix, &suffix), &budget, &chars);
        assert!(prompt.tokens <= 600);
        let (kept_prefix, kept_suffix) = slots(&prompt);
        assert!(prefix.ends_with(&kept_prefix) && kept_prefix.starts_with("before"));
        assert!(suffix.starts_with(&kept_suffix) && kept_suffix.ends_with("\"ünï\""));
        assert!(kept_prefix.ends_with("before0199 = \"ünï\"\n"));
        // 60/20 of what the sentinels leave, with the context's unused 20 split 3:1.
        let avail = 600 - chars("<|fim_prefix|><|fim_suffix|><|fim_middle|>");
        // Less an eighth at most: the cut moves in steps so that typing keeps the cache valid.
        assert!(chars(&kept_prefix) <= avail * 3 / 4 && chars(&kept_prefix) > avail * 3 / 4 * 7 / 8 - 20);
        assert!(chars(&kept_suffix) <= avail / 4 + 1 && chars(&kept_suffix) > avail / 4 - 20);
    }

    #[test]
    fn a_short_suffix_gives_its_share_to_the_prefix() {
        let prefix = lines("x", 500);
        let prompt = build(Template::QwenFim, &input(&prefix, "\n"), &Budget::default(), &chars);
        let (kept_prefix, kept_suffix) = slots(&prompt);
        assert_eq!(kept_suffix, "\n");
        assert!(chars(&kept_prefix) > (1024 - 60) * 7 / 8 - 20, "prefix took {}", chars(&kept_prefix));
        assert!(prompt.tokens <= 1024);
    }

    #[test]
    fn a_single_overlong_line_is_cut_inside_on_a_char_boundary() {
        let prefix = "ß".repeat(300);
        let suffix = "é".repeat(300);
        let budget = Budget { max_prompt_tokens: 100, ..Budget::default() };
        let prompt = build(Template::DeepSeekFim, &input(&prefix, &suffix), &budget, &chars);
        assert!(prompt.tokens <= 100);
        let (kept_prefix, kept_suffix) = slots(&prompt);
        assert!(!kept_prefix.is_empty() && prefix.ends_with(&kept_prefix));
        assert!(!kept_suffix.is_empty() && suffix.starts_with(&kept_suffix));
    }

    #[test]
    fn context_is_taken_whole_in_order_skipping_what_does_not_fit() {
        let big = "y".repeat(5000);
        let files = [
            ContextFile { path: "first.py", text: "a = 1" },
            ContextFile { path: "huge.py", text: &big },
            ContextFile { path: "third.py", text: "c = 3" },
        ];
        let input = PromptInput { open_files: &files, ..input("z = ", "") };
        let prompt = build(Template::QwenFim, &input, &Budget::default(), &chars);
        assert!(prompt.tokens <= 1024);
        // The most relevant file is rendered last, next to the cursor.
        let third = prompt.text.find("third.py").expect("third.py included");
        let first = prompt.text.find("first.py").expect("first.py included");
        assert!(third < first);
        assert!(!prompt.text.contains("huge.py"));
    }

    #[test]
    fn context_the_window_already_shows_is_not_repeated() {
        let helper = "def helper(x):\n    return x + 1";
        let prefix = format!("{helper}\n\n\ndef main():\n    ");
        let far = format!("{helper}\n{}\ndef main():\n    ", "# filler line\n".repeat(400));
        let files = [ContextFile { path: "m.py", text: helper }, ContextFile { path: "n.py", text: "n = 2" }];
        let near = build(
            Template::QwenFim,
            &PromptInput { open_files: &files, ..input(&prefix, "") },
            &Budget::default(),
            &chars,
        );
        assert_eq!(near.text.matches("return x + 1").count(), 1, "{}", near.text);
        assert!(near.text.contains("n = 2"));
        let far = build(
            Template::QwenFim,
            &PromptInput { open_files: &files, ..input(&far, "") },
            &Budget::default(),
            &chars,
        );
        assert!(far.text.contains("<|file_sep|>m.py\ndef helper"), "out of the window, it is context: {}", far.text);
    }

    #[test]
    fn edits_come_before_files_when_the_budget_is_tight() {
        let files = [ContextFile { path: "other.py", text: &"w".repeat(100) }];
        let edits = [RecentEdit { path: "src/app.py", before: "a", after: "b" }];
        let input = PromptInput { open_files: &files, recent_edits: &edits, ..input("z = ", "") };
        let budget = Budget { max_prompt_tokens: 170, prefix_share: 1, suffix_share: 1, context_share: 98 };
        let prompt = build(Template::QwenFim, &input, &budget, &chars);
        assert!(prompt.text.contains("<|file_sep|>recent_edits.diff\n--- src/app.py\n+++ src/app.py\n-a\n+b\n"));
        assert!(!prompt.text.contains("other.py"));
    }

    #[test]
    fn a_zero_context_share_turns_context_off() {
        let files = [ContextFile { path: "a.py", text: "a = 1" }];
        let input = PromptInput { open_files: &files, ..input("z = ", "") };
        let budget = Budget { context_share: 0, ..Budget::default() };
        assert_eq!(
            build(Template::QwenFim, &input, &budget, &chars).text,
            "<|fim_prefix|>z = <|fim_suffix|><|fim_middle|>"
        );
    }

    #[test]
    fn never_exceeds_the_budget_over_many_sizes() {
        let files_text = lines("ctx", 30);
        let files = [
            ContextFile { path: "a.py", text: &files_text[..files_text.len() / 2] },
            ContextFile { path: "b.py", text: &files_text[files_text.len() / 2..] },
            ContextFile { path: "c.py", text: "c = 3" },
        ];
        let edits = [RecentEdit { path: "src/app.py", before: "old line", after: "new line\nsecond" }];
        let counters: [&dyn Fn(&str) -> usize; 3] = [&chars, &words, &superadditive];
        let templates = [Template::QwenFim, Template::DeepSeekFim, Template::CodeLlamaFim, Template::PrefixOnly];
        for (n_prefix, n_suffix) in [(0, 0), (1, 0), (0, 3), (7, 2), (40, 40), (120, 5)] {
            let prefix = lines("p", n_prefix);
            let suffix = lines("s", n_suffix);
            for context in [0, 1, 3] {
                let input = PromptInput {
                    open_files: &files[..context],
                    recent_edits: if context > 0 { &edits } else { &[] },
                    ..input(&prefix, &suffix)
                };
                for template in templates {
                    for count in counters {
                        let bare = Parts { prefix: "", suffix: "", files: Vec::new(), edits: Vec::new() };
                        let floor = count(&render(template, &input, &bare).text);
                        for max in (0..700).step_by(37) {
                            let budget = Budget { max_prompt_tokens: max, ..Budget::default() };
                            let prompt = build(template, &input, &budget, count);
                            assert_eq!(prompt.tokens, count(&prompt.text));
                            if floor <= max {
                                assert!(prompt.tokens <= max, "{template:?} max {max}: {} tokens", prompt.tokens);
                            }
                            let (mut kept_prefix, kept_suffix) = slots(&prompt);
                            if template == Template::CodeLlamaFim {
                                // The word-boundary space after `<PRE>`.
                                kept_prefix.remove(0);
                            }
                            // Other templates put the context in the prefix slot.
                            if context == 0 || template == Template::QwenFim {
                                assert!(prefix.ends_with(&kept_prefix), "{template:?} max {max}: {kept_prefix:?}");
                            }
                            assert!(suffix.starts_with(&kept_suffix), "{template:?} max {max}: {kept_suffix:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn water_fill_redistributes_unused_shares() {
        assert_eq!(water_fill(100, [60, 20, 20], [1000, 1000, 1000]), [60, 20, 20]);
        assert_eq!(water_fill(100, [60, 20, 20], [1000, 5, 0]), [95, 5, 0]);
        assert_eq!(water_fill(100, [60, 20, 20], [10, 1000, 1000]), [10, 45, 45]);
        assert_eq!(water_fill(100, [60, 20, 20], [10, 5, 7]), [10, 5, 7]);
        assert_eq!(water_fill(10, [1, 1, 1], [100, 100, 100]), [4, 3, 3]);
        assert_eq!(water_fill(100, [0, 0, 0], [100, 100, 100]), [0, 0, 0]);
    }
}
