//! Cutting text to a token budget at line boundaries, for the prompt's parts ([`super::build`]):
//! the end of the prefix, the start of the suffix. Token counts are expensive (a tokenizer pass),
//! so each cut counts a window a few times the budget, never a long file whole.

/// How far the search for a cut first looks, in bytes per token of budget. Code averages three to four
/// bytes per token; the window doubles when that is not enough, so a long file is never counted whole.
const BYTES_PER_TOKEN_GUESS: usize = 4;

/// The longest end of `text` within `budget` tokens, starting at a line start when any line start
/// fits, else inside the first line that does not.
pub(super) fn fit_tail<'a>(text: &'a str, budget: usize, count: &dyn Fn(&str) -> usize) -> &'a str {
    if budget == 0 {
        return "";
    }
    let mut window = budget.saturating_mul(BYTES_PER_TOKEN_GUESS);
    // Byte offset whose tail is known to be over budget: the cut lies after it.
    let over = loop {
        let start = floor_char_boundary(text, text.len().saturating_sub(window));
        if start == 0 {
            if count(text) <= budget {
                return text;
            }
            break 0;
        }
        if count(&text[start..]) > budget {
            break start;
        }
        window = window.saturating_mul(2);
    };
    let fits = |at: &usize| count(&text[*at..]) <= budget;
    let line_starts: Vec<usize> = text[over..].match_indices('\n').map(|(i, _)| over + i + 1).collect();
    let first = line_starts.partition_point(|at| !fits(at));
    if let Some(&at) = line_starts.get(first) {
        return &text[at..];
    }
    let line = line_starts.last().copied().unwrap_or(over);
    let chars: Vec<usize> = text[line..].char_indices().skip(1).map(|(i, _)| line + i).collect();
    chars.get(chars.partition_point(|at| !fits(at))).map_or("", |&at| &text[at..])
}

/// [`fit_tail`], with the cut moved on to the first line start after a multiple of a step (about an
/// eighth of the budget in bytes, a power of two): as
/// the user types at the end, the prompt keeps its start (and the KV cache stays valid) until the
/// text outgrows the budget by a step, instead of shifting by a line every few keystrokes and
/// recomputing the whole prompt each time. Costs at most an eighth and a line of the prefix.
pub(super) fn fit_tail_stable<'a>(text: &'a str, budget: usize, count: &dyn Fn(&str) -> usize) -> &'a str {
    let tail = fit_tail(text, budget, count);
    let tight = text.len() - tail.len();
    if tight == 0 {
        return tail;
    }
    // From the budget, not the tail's length: that changes with every keystroke, the budget does not.
    let quantum = 1usize << (budget * BYTES_PER_TOKEN_GUESS / 8).max(64).ilog2();
    let step = tight.div_ceil(quantum) * quantum;
    match text.get(step..).and_then(|rest| rest.find('\n')).map(|i| step + i + 1) {
        Some(at) if at < text.len() => &text[at..],
        _ => tail,
    }
}

/// The longest start of `text` within `budget` tokens, ending at a line end (before its newline)
/// when any does, else inside the first line.
pub(super) fn fit_head<'a>(text: &'a str, budget: usize, count: &dyn Fn(&str) -> usize) -> &'a str {
    if budget == 0 {
        return "";
    }
    let mut window = budget.saturating_mul(BYTES_PER_TOKEN_GUESS);
    // Byte offset whose head is known to be over budget: the cut lies before it.
    let over = loop {
        let end = ceil_char_boundary(text, window);
        if end == text.len() {
            if count(text) <= budget {
                return text;
            }
            break end;
        }
        if count(&text[..end]) > budget {
            break end;
        }
        window = window.saturating_mul(2);
    };
    let fits = |at: &usize| count(&text[..*at]) <= budget;
    let line_ends: Vec<usize> = text[..over].match_indices('\n').map(|(i, _)| i).collect();
    let fitting = line_ends.partition_point(fits);
    if fitting > 0 {
        return &text[..line_ends[fitting - 1]];
    }
    let line = line_ends.first().copied().unwrap_or(over);
    let chars: Vec<usize> = text[..line].char_indices().map(|(i, _)| i).collect();
    match chars.partition_point(fits) {
        0 => "",
        n => &text[..chars[n - 1]],
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str) -> usize {
        text.chars().count()
    }

    #[test]
    fn the_prefix_cut_stays_put_while_typing_at_the_end() {
        let count = |t: &str| t.len().div_ceil(4);
        let mut text: String = (0..400).map(|i| format!("line {i:04}\n")).collect();
        let mut starts = std::collections::BTreeSet::new();
        for c in "    more typing at the end of the file, one character at a time".chars().cycle().take(600) {
            text.push(c);
            let tail = fit_tail_stable(&text, 256, &count);
            assert!(count(tail) <= 256);
            assert!(tail.len() > 256 * 4 * 7 / 8 - 20, "keeps most of the budget: {}", tail.len());
            assert!(text.len() - tail.len() == 0 || text.as_bytes()[text.len() - tail.len() - 1] == b'\n');
            starts.insert(text.len() - tail.len());
        }
        assert!(starts.len() <= 600 / 128 + 2, "the cut moves once per 128 typed bytes: {starts:?}");
    }

    #[test]
    fn fitting_helpers_cut_at_lines_and_respect_the_budget() {
        let text = "aaaa\nbbbb\ncccc\n";
        assert_eq!(fit_tail(text, 100, &chars), text);
        assert_eq!(fit_tail(text, 10, &chars), "bbbb\ncccc\n");
        assert_eq!(fit_tail(text, 9, &chars), "cccc\n");
        assert_eq!(fit_tail(text, 4, &chars), "");
        assert_eq!(fit_tail("xxxxxxxx", 3, &chars), "xxx");
        assert_eq!(fit_head(text, 100, &chars), text);
        assert_eq!(fit_head(text, 10, &chars), "aaaa\nbbbb");
        assert_eq!(fit_head(text, 3, &chars), "aaa");
        assert_eq!(fit_head("", 3, &chars), "");
        assert_eq!(fit_tail("", 3, &chars), "");
        assert_eq!(fit_head(text, 0, &chars), "");
    }
}
