//! The functions the user wrote in their own repositories (`marunochi data mine`) as training data:
//! each function's newest version as an SFT example, the newest fifth of the functions (by when
//! they were last written) held out for the gate, the newest few before them set aside to tell
//! training when it has learnt enough (`validation.jsonl`, ARCHITECTURE.md: "Training"), and every
//! edit of a function that stays in training as a correction pair (the new body ≻ the one it
//! replaced).

use std::collections::BTreeMap;

use super::{Example, Pair};
use crate::store::GitFunction;

/// The newest share of a language's functions the gate judges on, never trained on.
pub const HELDOUT_SHARE: f64 = 0.2;
/// Fewer functions than this: none is held out (the gate needs a handful to tell anything).
const MIN_FOR_HELDOUT: usize = 10;
/// Functions set aside for validation: the newest this many of those not held out, …
const VALIDATION: usize = 24;
/// … when at least this many are left (fewer: each is worth more as training data).
const MIN_FOR_VALIDATION: usize = 200;

#[derive(Debug, Default)]
pub struct Split {
    pub train: Vec<Example>,
    pub heldout: Vec<Example>,
    /// Neither trained on nor judged: what training watches to stop once it has learnt.
    pub validation: Vec<Example>,
    pub pairs: Vec<Pair>,
}

/// `functions` oldest first, as the store gives them.
pub fn split(functions: &[&GitFunction], since: Option<&str>) -> Split {
    // One function is its repository, file and name; its versions oldest first, with where its
    // newest one stands in `functions`.
    let mut versions: BTreeMap<(&str, &str, &str), (usize, Vec<&GitFunction>)> = BTreeMap::new();
    for (position, f) in functions.iter().enumerate() {
        let entry = versions.entry((&f.repository, &f.file_path, &f.name)).or_default();
        entry.0 = position;
        entry.1.push(f);
    }
    // By when each was last written (`functions` is in time order; ties in the order mined).
    let mut groups: Vec<(usize, Vec<&GitFunction>)> = versions.into_values().collect();
    groups.sort_by_key(|(newest, _)| *newest);
    let groups: Vec<Vec<&GitFunction>> = groups.into_iter().map(|(_, g)| g).collect();
    let held = if groups.len() < MIN_FOR_HELDOUT { 0 } else { (groups.len() as f64 * HELDOUT_SHARE).round() as usize };
    let (trained, heldout) = groups.split_at(groups.len() - held);
    let set_aside = if trained.len() < MIN_FOR_VALIDATION { 0 } else { VALIDATION };
    let (trained, validation) = trained.split_at(trained.len() - set_aside);
    let example = |f: &GitFunction| Example {
        id: format!("git:{}", f.id()),
        timestamp: f.authored_at.clone(),
        prefix: f.prefix.clone(),
        suffix: f.suffix.clone(),
        completion: f.body.clone(),
        action: "git".into(),
        weight: 1.0,
        priority: 1.0,
        dedup: 1.0,
        cluster: 0,
        cluster_size: 1,
        complexity: None,
        tier: 0,
        replay: since.is_some_and(|since| f.authored_at.as_str() < since),
    };
    let newest = |g: &Vec<&GitFunction>| example(g.last().expect("a group has a version"));
    let pairs = trained
        .iter()
        .flatten()
        .filter_map(|f| {
            let rejected = f.previous_body.clone()?;
            Some(Pair {
                id: format!("git:{}", f.id()),
                prefix: f.prefix.clone(),
                suffix: f.suffix.clone(),
                chosen: f.body.clone(),
                rejected,
            })
        })
        .collect();
    Split {
        train: trained.iter().map(newest).collect(),
        heldout: heldout.iter().map(newest).collect(),
        validation: validation.iter().map(newest).collect(),
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(day: usize, name: &str, body: &str, previous: Option<&str>) -> GitFunction {
        GitFunction {
            repository: "/r".into(),
            commit: format!("c{day}"),
            authored_at: format!("2026-01-{day:02}T10:00:00.000Z"),
            language: "python".into(),
            file_path: "file:///r/m.py".into(),
            name: name.into(),
            prefix: format!("def {name}():\n    "),
            suffix: "\n".into(),
            body: body.into(),
            previous_body: previous.map(Into::into),
        }
    }

    #[test]
    fn the_newest_functions_are_held_out_whole_and_edits_become_pairs() {
        let mut all: Vec<GitFunction> = (1..=10).map(|d| function(d, &format!("f{d}"), "return 1", None)).collect();
        // f1 edited late: its newest version makes it one of the newest functions.
        all.push(function(20, "f1", "return 2", Some("return 1")));
        all.push(function(11, "f2", "return 3", Some("return 1")));
        all.sort_by(|a, b| a.authored_at.cmp(&b.authored_at));
        let refs: Vec<&GitFunction> = all.iter().collect();
        let split = split(&refs, Some("2026-01-05"));
        let held: Vec<&str> = split.heldout.iter().map(|e| &e.timestamp[8..10]).collect();
        assert_eq!(held, ["11", "20"], "f2 and f1, every version of them");
        assert_eq!(split.train.len(), 8);
        assert!(split.train.iter().all(|e| e.completion == "return 1" && e.action == "git"));
        assert_eq!(split.train.iter().filter(|e| e.replay).count(), 2, "f3 and f4 are older than `since`");
        assert!(split.pairs.is_empty(), "both edited functions are held out");
        assert!(split.validation.is_empty(), "too few to set any aside");

        let few: Vec<GitFunction> =
            vec![function(1, "a", "x = 1", None), function(2, "a", "x = 2\n    return x", Some("x = 1"))];
        let refs: Vec<&GitFunction> = few.iter().collect();
        let split = super::split(&refs, None);
        assert!(split.heldout.is_empty(), "too few to hold any out");
        assert_eq!(split.train.len(), 1);
        assert_eq!(split.train[0].completion, "x = 2\n    return x");
        let pair: Vec<(&str, &str)> = split.pairs.iter().map(|p| (p.chosen.as_str(), p.rejected.as_str())).collect();
        assert_eq!(pair, [("x = 2\n    return x", "x = 1")]);
    }

    #[test]
    fn the_newest_functions_before_the_held_out_ones_are_set_aside_for_validation() {
        let mut all: Vec<GitFunction> = (0..300)
            .map(|i| {
                let mut f = function(1, &format!("f{i:03}"), "return 1", None);
                f.authored_at = format!("2026-01-01T10:{:02}:{:02}.000Z", i / 60, i % 60);
                f
            })
            .collect();
        // An edit of a function set aside is no training pair either.
        let mut edited = all[235].clone();
        edited.previous_body = Some("return 0".into());
        all[235] = edited;
        let refs: Vec<&GitFunction> = all.iter().collect();
        let split = split(&refs, None);
        let names = |examples: &[Example]| examples.iter().map(|e| e.prefix.clone()).collect::<Vec<_>>();
        assert_eq!(split.heldout.len(), 60);
        assert_eq!(names(&split.validation), (216..240).map(|i| format!("def f{i:03}():\n    ")).collect::<Vec<_>>());
        assert_eq!(names(&split.train), (0..216).map(|i| format!("def f{i:03}():\n    ")).collect::<Vec<_>>());
        assert!(split.pairs.is_empty());
    }
}
