//! What the user did with a suggestion, inferred from the document's edit stream (editors report
//! only explicit acceptance, and not all of them; ARCHITECTURE.md, `src/capture/`). A pure state machine: events in,
//! outcomes out, no clock or I/O of its own, so every path can be driven by tests.
//!
//! - **accepted**: the `marunochi.accept` command, or one change inserting the whole suggestion at
//!   the cursor (or replacing the word being typed with that word and the suggestion, as a
//!   completion-menu item does), or the changes of one notification leaving the word and the
//!   suggestion where the word began (Emacs's eglot applies a menu item as several changes: the
//!   label inserted, taken back, the word replaced by the item's text);
//! - **partial**: one change inserting a proper prefix of it of at least two characters (word- or
//!   line-wise accept; typing by hand arrives one character per change and never counts, so a
//!   one-character suggestion is accepted only through the command);
//! - **corrected**: accepted, then edited inside its region before the correction window closed
//!   (the final code and a unified diff are kept);
//! - **rejected**: something else was typed at the cursor (kept as the alternative chosen);
//! - **ignored**: superseded by a newer suggestion in the same document, or the document closed.
//!
//! Taken code is watched for corrections until the window closes or the cursor leaves it (a request
//! from the editor at a position outside the code).
//!
//! Every tracked suggestion ends in exactly one outcome.

use std::collections::HashMap;

use crate::store::Action;

pub use crate::serving::Diagnostic;

/// A suggestion put in front of the user at byte `offset` of `uri`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub id: String,
    pub uri: String,
    pub offset: usize,
    pub text: String,
    /// The word being typed before the cursor, which a completion-menu item replaces with itself
    /// and the suggestion.
    pub word: String,
    pub shown_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: String,
    /// The document the suggestion was in.
    pub uri: String,
    pub action: Action,
    /// Accepted or partial: when it was taken, ms after it was shown.
    pub time_to_action_ms: Option<i64>,
    /// Corrected (and accepted, at window close): the code as the user left it.
    pub final_code: Option<String>,
    /// Corrected: unified diff suggestion → final code.
    pub diff: Option<String>,
    /// Rejected: what the user typed instead.
    pub typed_instead: Option<String>,
    /// Taken: the language server's latest diagnostics that overlap the code when it settled.
    pub diagnostics: Vec<Diagnostic>,
    /// How long it was in front of the user before being taken, replaced or typed over; `None`
    /// when it was still there as the proxy went away.
    pub shown_ms: Option<i64>,
    /// Taken: the bytes of the document holding the final code when it settled.
    pub region: Option<std::ops::Range<usize>>,
}

impl Outcome {
    fn new(tracked: &Tracked, action: Action) -> Outcome {
        Outcome {
            id: tracked.id.clone(),
            uri: tracked.uri.clone(),
            action,
            time_to_action_ms: None,
            final_code: None,
            diff: None,
            typed_instead: None,
            diagnostics: Vec::new(),
            shown_ms: None,
            region: None,
        }
    }
}

enum State {
    /// Shown, nothing decided yet.
    Shown,
    /// Taken (wholly or partly) at `taken_at_ms`; the region `start..start + code.len()` is watched
    /// for corrections until the window closes.
    /// `arrived`: the text has been seen in the document (the accept command can come before it).
    Taken { start: usize, code: String, taken_at_ms: i64, partial: bool, edited: bool, arrived: bool },
}

struct Entry {
    tracked: Tracked,
    state: State,
    /// Rejected: the text typed at the cursor instead.
    typed: Option<String>,
    /// Where the word being typed began, and the word (with what was typed on by hand): where a
    /// completion-menu item's text lands.
    item_start: usize,
    item_word: String,
    /// Seemingly rejected by a change after which the same notification has more.
    doubted: bool,
}

/// One change of a document: bytes `start..start + removed_len` became `inserted`.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit<'a> {
    pub uri: &'a str,
    pub start: usize,
    pub removed_len: usize,
    pub inserted: &'a str,
    pub at_ms: i64,
    /// More changes of the same notification follow: a rejection waits for
    /// [`Classifier::changes_end`], which judges them together.
    pub more: bool,
}

pub struct Classifier {
    correction_window_ms: i64,
    entries: HashMap<String, Entry>,
    /// The latest diagnostics published for each document.
    diagnostics: HashMap<String, Vec<Diagnostic>>,
}

impl Classifier {
    pub fn new(correction_window_ms: i64) -> Classifier {
        Classifier { correction_window_ms, entries: HashMap::new(), diagnostics: HashMap::new() }
    }

    /// A suggestion was shown; an undecided older one in the same document is ignored now.
    pub fn shown(&mut self, tracked: Tracked) -> Vec<Outcome> {
        let superseded: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.tracked.uri == tracked.uri && matches!(e.state, State::Shown))
            .map(|(id, _)| id.clone())
            .collect();
        let at_ms = Some(tracked.shown_at_ms);
        let out = superseded.iter().map(|id| self.finish(id, Action::Ignored, at_ms)).collect();
        let item_start = tracked.offset.saturating_sub(tracked.word.len());
        let item_word = tracked.word.clone();
        let entry = Entry { tracked, state: State::Shown, typed: None, item_start, item_word, doubted: false };
        self.entries.insert(entry.tracked.id.clone(), entry);
        out
    }

    /// The editor ran `marunochi.accept`. The text usually arrives in a change of its own (before or
    /// after the command); if it already did, this only confirms it.
    pub fn accept_command(&mut self, id: &str, at_ms: i64) {
        if let Some(entry) = self.entries.get_mut(id)
            && let State::Shown = entry.state
        {
            entry.state = State::Taken {
                start: entry.tracked.offset,
                code: entry.tracked.text.clone(),
                taken_at_ms: at_ms,
                partial: false,
                edited: false,
                arrived: false,
            };
        }
    }

    pub fn edit(&mut self, edit: &Edit) -> Vec<Outcome> {
        let mut decided = Vec::new();
        for (id, entry) in self.entries.iter_mut().filter(|(_, e)| e.tracked.uri == edit.uri) {
            let action = if entry.doubted { None } else { entry.apply(edit) };
            if edit.start < entry.item_start && edit.start + edit.removed_len <= entry.item_start {
                entry.item_start = entry.item_start - edit.removed_len + edit.inserted.len();
            }
            match action {
                Some(Action::Rejected) if edit.more => entry.doubted = true,
                Some(action) => decided.push((id.clone(), action)),
                None => {}
            }
        }
        decided.into_iter().map(|(id, action)| self.finish(&id, action, Some(edit.at_ms))).collect()
    }

    /// The notification whose changes ended with the last [`Classifier::edit`] left `uri` reading
    /// `text`: a suggestion its changes seemed to reject is taken if the word it was shown after
    /// and the suggestion now stand where the word began, rejected otherwise.
    pub fn changes_end(&mut self, uri: &str, text: &str, at_ms: i64) -> Vec<Outcome> {
        let doubted: Vec<String> =
            self.entries.iter().filter(|(_, e)| e.tracked.uri == uri && e.doubted).map(|(id, _)| id.clone()).collect();
        let mut out = Vec::new();
        for id in doubted {
            let entry = self.entries.get_mut(&id).expect("listed above");
            let taken = text
                .get(entry.item_start..)
                .and_then(|rest| rest.strip_prefix(entry.item_word.as_str()))
                .is_some_and(|rest| rest.starts_with(entry.tracked.text.as_str()));
            if taken {
                entry.doubted = false;
                entry.state = State::Taken {
                    start: entry.item_start + entry.item_word.len(),
                    code: entry.tracked.text.clone(),
                    taken_at_ms: at_ms,
                    partial: false,
                    edited: false,
                    arrived: true,
                };
            } else {
                out.push(self.finish(&id, Action::Rejected, Some(at_ms)));
            }
        }
        out
    }

    /// The editor asked something at byte `offset` of `uri` (completion, hover, …): the cursor is
    /// there. Taken code it is not in (its end counts as in) has had its chance to be corrected.
    pub fn cursor(&mut self, uri: &str, offset: usize) -> Vec<Outcome> {
        let left: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.tracked.uri == uri)
            .filter(|(_, e)| match &e.state {
                State::Taken { start, code, arrived: true, .. } => offset < *start || offset > start + code.len(),
                _ => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        left.iter().map(|id| self.finish_taken(id)).collect()
    }

    /// The language server published the diagnostics of `uri` (they replace the previous ones).
    pub fn diagnostics(&mut self, uri: &str, diagnostics: Vec<Diagnostic>) {
        self.diagnostics.insert(uri.to_owned(), diagnostics);
    }

    /// Closes the correction windows that have run out by `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Outcome> {
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Taken { taken_at_ms, .. } if now_ms - taken_at_ms >= self.correction_window_ms))
            .map(|(id, _)| id.clone())
            .collect();
        due.iter().map(|id| self.finish_taken(id)).collect()
    }

    /// The document closed (at `at_ms`, if known): what was shown there is ignored, what was taken
    /// is settled.
    pub fn closed(&mut self, uri: &str, at_ms: Option<i64>) -> Vec<Outcome> {
        let ids: Vec<String> =
            self.entries.iter().filter(|(_, e)| e.tracked.uri == uri).map(|(id, _)| id.clone()).collect();
        let outcomes = ids
            .iter()
            .map(|id| match self.entries[id].state {
                State::Shown => self.finish(id, Action::Ignored, at_ms),
                State::Taken { .. } => self.finish_taken(id),
            })
            .collect();
        self.diagnostics.remove(uri);
        outcomes
    }

    /// Everything still tracked is settled now (the proxy is going away).
    pub fn settle_all(&mut self) -> Vec<Outcome> {
        let mut uris: Vec<String> = self.entries.values().map(|e| e.tracked.uri.clone()).collect();
        uris.sort();
        uris.dedup();
        uris.iter().flat_map(|uri| self.closed(uri, None)).collect()
    }

    pub fn tracking(&self) -> usize {
        self.entries.len()
    }

    fn finish_taken(&mut self, id: &str) -> Outcome {
        let edited = matches!(self.entries[id].state, State::Taken { edited: true, .. });
        let partial = matches!(self.entries[id].state, State::Taken { partial: true, .. });
        let unchanged =
            matches!(&self.entries[id].state, State::Taken { code, .. } if *code == self.entries[id].tracked.text);
        let action = match (edited && !unchanged, partial) {
            (true, _) => Action::Corrected,
            (false, true) => Action::Partial,
            (false, false) => Action::Accepted,
        };
        self.finish(id, action, None)
    }

    /// `at_ms`: when it was decided, for what was never taken.
    fn finish(&mut self, id: &str, action: Action, at_ms: Option<i64>) -> Outcome {
        let entry = self.entries.remove(id).expect("finishing a tracked suggestion");
        let mut outcome = Outcome::new(&entry.tracked, action);
        match entry.state {
            State::Shown => outcome.shown_ms = at_ms.map(|at| at - entry.tracked.shown_at_ms),
            State::Taken { start, code, taken_at_ms, .. } => {
                let end = start + code.len();
                let overlapping = self.diagnostics.get(&entry.tracked.uri).into_iter().flatten();
                // A zero-width diagnostic at the code's start or end still belongs to it.
                outcome.diagnostics = overlapping.filter(|d| d.start <= end && d.end >= start).cloned().collect();
                outcome.time_to_action_ms = Some(taken_at_ms - entry.tracked.shown_at_ms);
                outcome.shown_ms = outcome.time_to_action_ms;
                outcome.region = Some(start..end);
                outcome.final_code = Some(code.clone());
                if action == Action::Corrected {
                    let diff = similar::TextDiff::from_lines(&entry.tracked.text, &code);
                    outcome.diff = Some(diff.unified_diff().header("suggestion", "final").to_string());
                }
            }
        }
        if action == Action::Rejected {
            outcome.typed_instead = entry.typed;
        }
        outcome
    }
}

impl Entry {
    /// Applies one change; `Some` when it decides the outcome at once.
    fn apply(&mut self, edit: &Edit) -> Option<Action> {
        let end = edit.start + edit.removed_len;
        let insertion_at = |at: usize| edit.start == at && edit.removed_len == 0;
        match &mut self.state {
            State::Shown => {
                let at = self.tracked.offset;
                let word = &self.tracked.word;
                // The end of the word being typed replaced by itself and more (a completion-menu
                // item's edit): the more is what was inserted at the cursor.
                let rewritten = (edit.start < at && end == at && edit.removed_len <= word.len())
                    .then(|| edit.inserted.strip_prefix(&word[floor_boundary(word, word.len() - edit.removed_len)..]))
                    .flatten()
                    .filter(|more| !more.is_empty());
                if let Some(more) = rewritten {
                    return self.apply(&Edit { start: at, removed_len: 0, inserted: more, ..*edit });
                }
                if insertion_at(at) {
                    let text = &self.tracked.text;
                    // One character per change is typing, whatever it matches (a suggestion of one
                    // character is accepted only through the command).
                    let typed = edit.inserted.chars().count() == 1;
                    if !typed && edit.inserted == text.as_str() {
                        self.taken(edit, false);
                    } else if !typed && text.starts_with(edit.inserted) {
                        self.taken(edit, true);
                    } else if let Some(rest) = text.strip_prefix(edit.inserted).filter(|_| typed) {
                        // Typed by hand: the suggestion stays shown a character further on and never
                        // counts as accepted.
                        self.tracked.offset += edit.inserted.len();
                        self.tracked.text = rest.to_owned();
                        self.tracked.word.push_str(edit.inserted);
                        self.item_word.push_str(edit.inserted);
                        if self.tracked.text.is_empty() {
                            return Some(Action::Ignored);
                        }
                    } else {
                        self.typed = Some(edit.inserted.to_owned());
                        return Some(Action::Rejected);
                    }
                } else if end <= at {
                    // Before the cursor: the suggestion moves with the text (and the word being
                    // typed loses what was deleted from its end).
                    if end == at && edit.inserted.is_empty() && edit.removed_len <= self.tracked.word.len() {
                        let kept = floor_boundary(&self.tracked.word, self.tracked.word.len() - edit.removed_len);
                        self.tracked.word.truncate(kept);
                    }
                    self.tracked.offset = at - edit.removed_len + edit.inserted.len();
                } else if edit.start < at && !edit.inserted.is_empty() {
                    self.typed = Some(edit.inserted.to_owned());
                    return Some(Action::Rejected);
                }
                None
            }
            State::Taken { start, code, edited, arrived, .. } => {
                let region_end = *start + code.len();
                if !*arrived && insertion_at(*start) && edit.inserted == code.as_str() {
                    *arrived = true;
                } else if end <= *start {
                    *start = *start - edit.removed_len + edit.inserted.len();
                } else if edit.start < region_end || continues_line(code, edit, region_end) {
                    // Inside the region: apply it to our copy of the code.
                    let from = floor_boundary(code, edit.start.saturating_sub(*start).min(code.len()));
                    let to = floor_boundary(code, end.saturating_sub(*start).min(code.len()));
                    code.replace_range(from..to, edit.inserted);
                    *start = (*start).min(edit.start);
                    *edited = true;
                }
                None
            }
        }
    }

    fn taken(&mut self, edit: &Edit, partial: bool) {
        self.state = State::Taken {
            start: edit.start,
            code: edit.inserted.to_owned(),
            taken_at_ms: edit.at_ms,
            partial,
            edited: false,
            arrived: true,
        };
    }
}

/// Typing on at the end of taken code, on its last line, finishes that code (a closing bracket, a
/// different last argument); a new line after it is new code.
fn continues_line(code: &str, edit: &Edit, region_end: usize) -> bool {
    edit.start == region_end
        && edit.removed_len == 0
        && !code.is_empty()
        && !code.ends_with('\n')
        && !edit.inserted.starts_with('\n')
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const URI: &str = "file:///p/a.py";

    fn tracked(id: &str, offset: usize, text: &str) -> Tracked {
        Tracked { id: id.into(), uri: URI.into(), offset, text: text.into(), word: String::new(), shown_at_ms: 1000 }
    }

    fn insert(at: usize, text: &str, at_ms: i64) -> Edit<'_> {
        Edit { uri: URI, start: at, removed_len: 0, inserted: text, at_ms, more: false }
    }

    fn remove(at: usize, len: usize, at_ms: i64) -> Edit<'static> {
        Edit { uri: URI, start: at, removed_len: len, inserted: "", at_ms, more: false }
    }

    #[test]
    fn accepted_whole_then_settled_when_the_window_closes() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("a", 10, "onacci(n - 1)"));
        assert!(c.edit(&insert(10, "onacci(n - 1)", 1800)).is_empty());
        assert!(c.tick(100_000).is_empty(), "the correction window is still open");
        let out = c.tick(122_000);
        assert_eq!(out[0].action, Action::Accepted);
        assert_eq!(out[0].time_to_action_ms, Some(800));
        assert_eq!(out[0].final_code.as_deref(), Some("onacci(n - 1)"));
        assert_eq!(c.tracking(), 0);
    }

    #[test]
    fn a_correction_inside_the_region_keeps_the_final_code_and_a_diff() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("a", 10, "return a + b\n"));
        c.accept_command("a", 1500);
        c.edit(&insert(10, "return a + b\n", 1500));
        // An edit before the region shifts it; then "+" becomes "*" inside it.
        c.edit(&insert(0, "# hi\n", 2000));
        c.edit(&remove(15 + 9, 1, 2500));
        c.edit(&insert(15 + 9, "*", 2600));
        // Typing after the region (on the line after it) is not a correction of it.
        c.edit(&insert(15 + 13, "x", 2700));
        let out = c.closed(URI, None);
        assert_eq!(out[0].action, Action::Corrected);
        assert_eq!(out[0].final_code.as_deref(), Some("return a * b\n"));
        let diff = out[0].diff.as_deref().unwrap();
        assert!(diff.contains("-return a + b") && diff.contains("+return a * b"), "{diff}");
    }

    #[test]
    fn partial_rejected_typed_by_hand_and_ignored() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("p", 5, "fibonacci(n - 1)"));
        c.edit(&insert(5, "fibonacci", 1200));
        assert_eq!(c.tick(200_000)[0].action, Action::Partial);

        c.shown(tracked("r", 5, "fibonacci(n - 1)"));
        let out = c.edit(&insert(5, "x", 1300));
        assert_eq!((out[0].action, out[0].typed_instead.as_deref()), (Action::Rejected, Some("x")));

        c.shown(tracked("h", 5, "ab"));
        assert!(c.edit(&insert(5, "a", 1300)).is_empty(), "typing the first character by hand decides nothing");
        let out = c.edit(&insert(6, "b", 1400));
        assert_eq!(out[0].action, Action::Ignored, "the same text typed by hand is not an acceptance");

        c.shown(tracked("old", 5, "x"));
        let out = c.shown(tracked("new", 6, "y"));
        assert_eq!((out[0].id.as_str(), out[0].action), ("old", Action::Ignored));
        assert_eq!(c.closed(URI, None)[0].action, Action::Ignored);
    }

    #[test]
    fn typing_on_at_the_end_of_the_last_line_is_part_of_the_code_a_new_line_is_not() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("a", 4, "fib(n - 2"));
        c.edit(&insert(4, "fib(n - 2", 1100));
        c.edit(&remove(12, 1, 1200));
        c.edit(&insert(12, "1)", 1300));
        c.edit(&insert(14, "\n", 1400));
        c.edit(&insert(15, "y = 1", 1500));
        let out = c.tick(200_000);
        assert_eq!((out[0].action, out[0].final_code.as_deref()), (Action::Corrected, Some("fib(n - 1)")));
        assert_eq!(out[0].region, Some(4..14));
    }

    #[test]
    fn undo_right_after_accepting_is_a_correction_to_nothing() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("u", 4, "abc()\ndef()"));
        c.edit(&insert(4, "abc()\ndef()", 1100));
        c.edit(&remove(4, 11, 1300));
        let out = c.tick(200_000);
        assert_eq!(out[0].action, Action::Corrected);
        assert_eq!(out[0].final_code.as_deref(), Some(""));
        let diff = out[0].diff.as_deref().unwrap();
        assert!(diff.contains("-abc()") && diff.contains("-def()"), "{diff}");
    }

    #[test]
    fn diagnostics_inside_the_accepted_code_go_with_its_outcome() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("a", 10, "x = undefined_name"));
        c.edit(&insert(10, "x = undefined_name", 1500));
        let diagnostic = |start, end, message: &str| Diagnostic { start, end, severity: 1, message: message.into() };
        c.diagnostics(URI, vec![diagnostic(14, 28, "undefined_name is not defined"), diagnostic(0, 3, "elsewhere")]);
        let out = c.tick(200_000);
        assert_eq!(out[0].diagnostics, vec![diagnostic(14, 28, "undefined_name is not defined")]);
    }

    #[test]
    fn a_completion_menu_item_replacing_the_word_being_typed_is_taken() {
        let menu = |id: &str| Tracked { word: "fib".into(), ..tracked(id, 14, "onacci(n - 2)") };
        let replace =
            |inserted: &'static str, at_ms| Edit { uri: URI, start: 11, removed_len: 3, inserted, at_ms, more: false };
        let mut c = Classifier::new(10_000);
        c.shown(menu("whole"));
        assert!(c.edit(&replace("fibonacci(n - 2)", 2000)).is_empty(), "taken, then watched for corrections");
        let out = c.tick(20_000);
        assert_eq!((out[0].action, out[0].final_code.as_deref()), (Action::Accepted, Some("onacci(n - 2)")));
        assert_eq!(out[0].region, Some(14..27));

        c.shown(menu("part"));
        assert!(c.edit(&replace("fibonacci(", 2000)).is_empty());
        assert_eq!(c.tick(20_000)[0].action, Action::Partial);

        c.shown(menu("other"));
        let out = c.edit(&replace("fib_memo(n)", 2000));
        assert_eq!((out[0].action, out[0].typed_instead.as_deref()), (Action::Rejected, Some("_memo(n)")));

        // After a backspace the word is `fi`: an edit replacing more than it is no menu item's.
        c.shown(menu("shorter"));
        assert!(c.edit(&remove(13, 1, 1500)).is_empty());
        let edit =
            Edit { uri: URI, start: 10, removed_len: 3, inserted: " fibonacci(n - 2)", at_ms: 2000, more: false };
        assert!(c.edit(&edit).is_empty());
        assert_eq!(c.closed(URI, None)[0].action, Action::Ignored, "not taken");
    }

    #[test]
    fn a_menu_item_applied_as_several_changes_is_judged_by_where_they_end() {
        // Emacs's eglot taking the item: the word replaced by the label, the label taken back to
        // the word, the word replaced by the item's text — one notification.
        let eglot = |label: &'static str, new_text: &'static str| {
            let change =
                |start, removed_len, inserted, more| Edit { uri: URI, start, removed_len, inserted, at_ms: 2000, more };
            [
                change(11, 3, "", true),
                change(11, 0, label, true),
                change(14, label.len() - 3, "", true),
                change(11, 3, "", true),
                change(11, 0, new_text, false),
            ]
        };
        let before = "def f(n):\n fib";
        let after = |new_text: &str| format!("{}{new_text}\n", &before[..11]);
        let mut c = Classifier::new(10_000);
        c.shown(Tracked { word: "fib".into(), ..tracked("menu", 14, "onacci(n - 2)") });
        for change in eglot("fibonacci(n - 2)", "fibonacci(n - 2)") {
            assert!(c.edit(&change).is_empty(), "nothing is decided before the notification ends");
        }
        assert!(c.changes_end(URI, &after("fibonacci(n - 2)"), 2000).is_empty(), "taken, then watched");
        let out = c.tick(20_000);
        assert_eq!((out[0].action, out[0].region.clone()), (Action::Accepted, Some(14..27)));

        c.shown(Tracked { word: "fib".into(), ..tracked("other", 14, "onacci(n - 2)") });
        for change in eglot("fib_memo(n)", "fib_memo(n)") {
            c.edit(&change);
        }
        let out = c.changes_end(URI, &after("fib_memo(n)"), 2000);
        assert_eq!((out[0].action, out[0].typed_instead.as_deref()), (Action::Rejected, Some("fib_memo(n)")));
        assert_eq!(c.tracking(), 0);
    }

    #[test]
    fn edited_back_to_the_suggestion_is_accepted() {
        let mut c = Classifier::new(10_000);
        c.shown(tracked("s", 4, "abc"));
        c.edit(&insert(4, "abc", 2000));
        c.edit(&remove(6, 1, 2500));
        c.edit(&insert(6, "c", 2600));
        assert_eq!(c.tick(20_000)[0].action, Action::Accepted);
    }

    #[test]
    fn the_cursor_leaving_the_code_closes_its_correction_window() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("a", 10, "return a + b\n"));
        c.edit(&insert(10, "return a + b\n", 1500));
        assert!(c.cursor(URI, 23).is_empty(), "the end of the accepted code is still in it");
        assert!(c.cursor(URI, 12).is_empty());
        let out = c.cursor(URI, 40);
        assert_eq!(out[0].action, Action::Accepted);
        assert_eq!(out[0].region, Some(10..23));
        assert_eq!(c.tracking(), 0);
        // A suggestion only shown is not settled by the cursor moving.
        c.shown(tracked("b", 10, "x"));
        assert!(c.cursor(URI, 0).is_empty());
    }

    #[test]
    fn visible_time_until_taken_typed_over_or_replaced() {
        let mut c = Classifier::new(120_000);
        c.shown(tracked("t", 5, "abc"));
        c.edit(&insert(5, "abc", 1700));
        assert_eq!(c.tick(200_000)[0].shown_ms, Some(700));
        c.shown(tracked("r", 5, "abc"));
        assert_eq!(c.edit(&insert(5, "x", 1250))[0].shown_ms, Some(250));
        c.shown(tracked("old", 5, "abc"));
        let out = c.shown(Tracked { shown_at_ms: 4000, ..tracked("new", 6, "y") });
        assert_eq!(out[0].shown_ms, Some(3000));
        assert_eq!(c.settle_all()[0].shown_ms, None, "still on screen when the proxy went away");
    }

    proptest! {
        #[test]
        fn random_edit_streams_end_every_suggestion_exactly_once(
            steps in prop::collection::vec((0u8..7, 0usize..40, 0usize..4, "[a-z()\\n]{0,6}"), 1..60)
        ) {
            let mut c = Classifier::new(10_000);
            let mut shown = 0usize;
            let mut finished: Vec<String> = Vec::new();
            for (i, (kind, at, len, text)) in steps.iter().enumerate() {
                let now = i as i64 * 1000;
                let out = match kind {
                    0 => {
                        shown += 1;
                        c.shown(Tracked { id: format!("s{shown}"), uri: URI.into(), offset: *at, text: text.clone(),
                                          word: text.chars().take(*len).collect(), shown_at_ms: now })
                    }
                    1 => { c.accept_command(&format!("s{}", shown.max(1)), now); Vec::new() }
                    2 => c.edit(&Edit { uri: URI, start: *at, removed_len: *len, inserted: text, at_ms: now, more: *len > 1 }),
                    4 => c.changes_end(URI, text, now),
                    3 => c.tick(now),
                    5 => c.cursor(URI, *at),
                    _ => c.edit(&insert(*at, text, now)),
                };
                finished.extend(out.into_iter().map(|o| o.id));
            }
            finished.extend(c.closed(URI, None).into_iter().map(|o| o.id));
            let mut unique = finished.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), finished.len(), "no suggestion ends twice");
            prop_assert_eq!(finished.len(), shown, "every suggestion ends");
            prop_assert_eq!(c.tracking(), 0);
        }
    }
}
