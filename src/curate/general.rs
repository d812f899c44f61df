//! Rehearsal against forgetting: functions of general code (`crate::corpus`: the files of the
//! standard library the gate does not score) mixed into a language's training set, so that a long
//! run keeps seeing code that is not the user's. Each is a FIM example like a workspace function
//! (`workspace::function_examples`), at full weight; never one holding held-out code.

use super::workspace::{function_examples, held_out_code};
use super::{Example, LanguageSet};
use crate::syntax::Syntax;

/// Functions taken from one file at most: many files, not a few long ones.
const PER_FILE: usize = 2;
/// Bodies shorter than this teach little.
const MIN_BODY: usize = 80;

/// Adds general functions until they are `share` of `set`'s training examples (0: none).
pub fn rehearse(language: &str, set: &mut LanguageSet, share: f64, corpus: &crate::corpus::Corpus) {
    let Some(syntax) = Syntax::for_language(language) else { return };
    if !(share > 0.0 && share < 1.0) || set.train.is_empty() {
        return;
    }
    let wanted = (set.train.len() as f64 * share / (1.0 - share)).round() as usize;
    let known = held_out_code(set);
    // Files spread evenly over the sorted list: the same examples every time, from all of it.
    let step = (corpus.others.len() / wanted.div_ceil(PER_FILE).max(1)).max(1);
    let mut added = 0;
    for path in corpus.others.iter().step_by(step) {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let text = crate::redact::redact(&text, &path.to_string_lossy());
        let Some(tree) = syntax.parse(&text) else { continue };
        let long_enough = |(_, example): &(Vec<String>, Example)| example.completion.len() >= MIN_BODY;
        for (scope, example) in function_examples(syntax, &tree, &text, &known).filter(long_enough).take(PER_FILE) {
            if added == wanted {
                return;
            }
            added += 1;
            *set.admitted.entry("general code".into()).or_default() += 1;
            set.train.push(Example {
                id: format!("general:{}:{}", path.display(), scope.join(".")),
                action: "general".into(),
                cluster: usize::MAX / 2 - added,
                ..example
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_functions_make_up_the_share_and_never_a_scored_file() {
        let corpus = crate::corpus::general("python").expect("python3 is installed wherever the tests run");
        let mut set = LanguageSet::default();
        let user = Example {
            id: "mine".into(),
            timestamp: "2026-12-01T00:00:00Z".into(),
            prefix: "def mine():\n".into(),
            suffix: String::new(),
            completion: "    return 1".into(),
            action: "git".into(),
            weight: 1.0,
            priority: 1.0,
            dedup: 1.0,
            cluster: 0,
            cluster_size: 1,
            complexity: Some(1),
            tier: 0,
            replay: false,
        };
        set.train = vec![user; 60];
        rehearse("python", &mut set, 0.25, &corpus);
        let general: Vec<&Example> = set.train.iter().filter(|e| e.action == "general").collect();
        assert_eq!(general.len(), 20, "a quarter of 80");
        assert_eq!(set.admitted["general code"], 20);
        assert!(general.iter().all(|e| e.completion.len() >= MIN_BODY && e.prefix.contains("def ")));
        assert!(
            general.iter().all(|e| corpus.files.iter().all(|f| !e.id.contains(&format!("{}:", f.display())))),
            "the gate's files are never trained on"
        );
        let files: std::collections::BTreeSet<&str> =
            general.iter().map(|e| e.id.rsplit_once(':').unwrap().0).collect();
        assert!(files.len() >= 10, "from many files: {files:?}");
        let mut again = LanguageSet { train: set.train[..60].to_vec(), ..LanguageSet::default() };
        rehearse("python", &mut again, 0.25, &corpus);
        assert_eq!(again.train, set.train, "the same examples every time");

        let mut none = LanguageSet { train: set.train[..60].to_vec(), ..LanguageSet::default() };
        rehearse("python", &mut none, 0.0, &corpus);
        assert_eq!(none.train.len(), 60);
    }
}
