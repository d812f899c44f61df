//! A suggestion as the editor sees it: an inline completion item, or an item in the completion
//! menu, merged with the real server's items.

use serde_json::{Value, json};

use super::Suggestion;
use crate::lsp::intercept::ACCEPT_COMMAND;

/// Where a completion item's data says it is ours (so `completionItem/resolve` is answered by us,
/// not sent to a server that never saw the item).
pub const DATA_KEY: &str = "marunochi";

fn accept_command(suggestion: &Suggestion) -> Value {
    json!({"title": "Accept marunochi suggestion", "command": ACCEPT_COMMAND, "arguments": [suggestion.id]})
}

/// `textDocument/inlineCompletion`'s result.
pub fn inline_result(suggestion: Option<&Suggestion>) -> Value {
    let items: Vec<Value> = suggestion
        .into_iter()
        .map(|s| {
            json!({
                "insertText": s.text,
                "range": {"start": s.position, "end": s.position},
                "command": accept_command(s),
            })
        })
        .collect();
    json!({"items": items})
}

/// Our item for the completion menu. It replaces the word being typed with the word plus the
/// suggestion, so clients that filter by the word before the cursor keep it while it still fits.
///
/// `snippets`: the editor takes snippet text edits. Then the edit is a snippet (our text escaped,
/// no placeholders): Neovim 0.11's completion inserts only the first word of a plain edit (and of
/// the label) and expands a snippet whole when the item is chosen.
pub fn completion_item(suggestion: &Suggestion, snippets: bool) -> Value {
    let full = format!("{}{}", suggestion.word, suggestion.text);
    let (format, new_text) = if snippets { (2, escape_snippet(&full)) } else { (1, full.clone()) };
    let first_line = full.lines().next().unwrap_or_default();
    let mut label: String = first_line.chars().take(60).collect();
    if label.len() < full.trim_end().len() {
        label.push('…');
    }
    json!({
        "label": label,
        "labelDetails": {"description": "marunochi"},
        "kind": 1,
        "detail": format!("marunochi · {}", suggestion.model_version),
        "documentation": {"kind": "markdown", "value": format!("```{}\n{full}\n```", suggestion.language)},
        "sortText": "0",
        "filterText": full,
        "insertTextFormat": format,
        "textEdit": {"range": {"start": suggestion.word_start, "end": suggestion.position}, "newText": new_text},
        "command": accept_command(suggestion),
        "data": {DATA_KEY: suggestion.id},
    })
}

/// `text` as literal snippet text: `\`, `$` and `}` escaped.
fn escape_snippet(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '$' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A completion result of our own (no server items): our item, if any.
pub fn completion_result(suggestion: Option<&Suggestion>, snippets: bool) -> Value {
    let items: Vec<Value> = suggestion.map(|s| completion_item(s, snippets)).into_iter().collect();
    json!({"isIncomplete": false, "items": items})
}

/// Adds our item to the server's completion result (`CompletionItem[]`, `CompletionList` or null),
/// keeping the server's `isIncomplete`. `None` when the result is not one of those shapes.
pub fn merge_into(result: &mut Value, suggestion: &Suggestion, snippets: bool) -> Option<()> {
    let item = completion_item(suggestion, snippets);
    match result {
        Value::Null => *result = json!({"isIncomplete": false, "items": [item]}),
        Value::Array(items) => items.insert(0, item),
        Value::Object(list) => list.get_mut("items")?.as_array_mut()?.insert(0, item),
        _ => return None,
    }
    Some(())
}

/// Whether a `completionItem/resolve` is for one of our items.
pub fn is_ours(item: &Value) -> bool {
    item.pointer(&format!("/data/{DATA_KEY}")).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsp::mirror::Position;

    fn suggestion() -> Suggestion {
        Suggestion {
            id: "s-1".into(),
            uri: "file:///p/a.py".into(),
            language: "python".into(),
            position: Position { line: 3, character: 10 },
            offset: 40,
            word_start: Position { line: 3, character: 7 },
            word: "fib".into(),
            kind: "inline",
            text: "onacci(n - 1)".into(),
            model_version: "tiny+python/v2".into(),
            confidence: -0.5,
            prefix: String::new(),
            suffix: String::new(),
            context_files: Vec::new(),
            sources: Vec::new(),
            recent_edits: Vec::new(),
            version: 4,
        }
    }

    #[test]
    fn inline_items_insert_at_the_cursor_and_report_acceptance() {
        let result = inline_result(Some(&suggestion()));
        let item = &result["items"][0];
        assert_eq!(item["insertText"], "onacci(n - 1)");
        assert_eq!(item["range"]["start"], json!({"line": 3, "character": 10}));
        assert_eq!(item["command"]["command"], ACCEPT_COMMAND);
        assert_eq!(item["command"]["arguments"], json!(["s-1"]));
        assert_eq!(inline_result(None), json!({"items": []}));
    }

    #[test]
    fn merged_items_keep_the_server_items_and_incompleteness() {
        let mut list = json!({"isIncomplete": true, "items": [{"label": "fibonacci"}]});
        merge_into(&mut list, &suggestion(), false).unwrap();
        assert_eq!(list["isIncomplete"], true);
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        assert_eq!(list["items"][0]["textEdit"]["newText"], "fibonacci(n - 1)");
        assert_eq!(list["items"][0]["label"], "fibonacci(n - 1)");
        assert!(is_ours(&list["items"][0]) && !is_ours(&list["items"][1]));

        let mut array = json!([{"label": "x"}]);
        merge_into(&mut array, &suggestion(), false).unwrap();
        assert_eq!(array.as_array().unwrap().len(), 2);
        let mut null = Value::Null;
        merge_into(&mut null, &suggestion(), false).unwrap();
        assert_eq!(null["isIncomplete"], false);
        assert!(merge_into(&mut json!("nonsense"), &suggestion(), false).is_none());
    }

    #[test]
    fn editors_with_snippets_get_our_text_as_a_literal_snippet() {
        let s = Suggestion { text: "onacci(n) + cost(\"$5\") }\\".into(), ..suggestion() };
        let item = completion_item(&s, true);
        assert_eq!(item["insertTextFormat"], 2);
        assert_eq!(item["textEdit"]["newText"], "fibonacci(n) + cost(\"\\$5\") \\}\\\\");
        assert_eq!(completion_item(&s, false)["insertTextFormat"], 1);
    }
}
