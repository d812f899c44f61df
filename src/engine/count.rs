//! Token counts for building a prompt without tokenizing the same text over and over: the cut
//! searches of `prompt::build` count dozens of tails of a 12 KB prefix (≈ 18 ms a keystroke with
//! SmolLM2's tokenizer). The prefix and suffix are tokenized once, with offsets; a slice of either
//! is counted from them (a token cut at an edge counts as one — `build`'s final count of the whole
//! prompt catches the rare seam where that is short); anything else is tokenized once and
//! remembered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;

use super::tokenizer::TextTokenizer;

pub struct Counter<'a> {
    tokenizer: &'a TextTokenizer,
    /// Texts tokenized once, with the byte range of each of their tokens.
    spans: Vec<(&'a str, Vec<Range<usize>>)>,
    memo: RefCell<HashMap<u64, usize>>,
}

impl<'a> Counter<'a> {
    /// A counter that knows `texts` (the prompt's prefix and suffix) by heart.
    pub fn new(tokenizer: &'a TextTokenizer, texts: &[&'a str]) -> Counter<'a> {
        let spans = texts.iter().filter_map(|text| Some((*text, tokenizer.token_ranges(text).ok()?))).collect();
        Counter { tokenizer, spans, memo: RefCell::new(HashMap::new()) }
    }

    pub fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        if let Some(n) = self.spans.iter().find_map(|(whole, tokens)| slice_count(whole, tokens, text)) {
            return n;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(&n) = self.memo.borrow().get(&key) {
            return n;
        }
        let n = self.tokenizer.encode(text).map_or(text.len(), |ids| ids.len());
        self.memo.borrow_mut().insert(key, n);
        n
    }
}

/// The tokens of `whole` that `text` overlaps, if `text` is a slice of `whole`.
fn slice_count(whole: &str, tokens: &[Range<usize>], text: &str) -> Option<usize> {
    let base = whole.as_ptr() as usize;
    let start = (text.as_ptr() as usize).checked_sub(base)?;
    let end = start + text.len();
    if end > whole.len() {
        return None;
    }
    let first = tokens.partition_point(|t| t.end <= start);
    let past = tokens.partition_point(|t| t.start < end);
    Some(past.saturating_sub(first))
}
