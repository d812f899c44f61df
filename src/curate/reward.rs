//! The reward of what became of a suggestion, for the reward stage (README, "Learning from
//! outcomes"): the suggestion as the model made it, scored by the user's answer to it. Only the
//! order matters to the stage (it compares each reward with the rest of its batch), and the order
//! is: taken and still there > taken, not yet checked > taken in part > corrected > taken, since
//! removed > rejected > shown and ignored.

use crate::store::{Action, CurationRow};

/// Taken, and still there at the latest retention check.
const RETAINED: f64 = 1.0;
const TAKEN: f64 = 0.75;
const PARTIAL: f64 = 0.5;
const CORRECTED: f64 = 0.25;
/// Taken, then gone by a retention check.
const REMOVED: f64 = 0.0;
const REJECTED: f64 = -0.5;
/// Shown and never answered: superseded by the next suggestion, or its document closed.
const IGNORED: f64 = -1.0;

/// The reward of `row`'s outcome; `None` while it is undecided or when it has no suggestion. A
/// thumbs-down or a failed run caps it at a rejection's.
pub(crate) fn of(row: &CurationRow) -> Option<f64> {
    if row.suggestion.trim().is_empty() {
        return None;
    }
    let inputs = &row.inputs;
    let kept = inputs.retention_30d.or(inputs.retention_7d);
    let reward = match row.action {
        Action::Shown => return None,
        Action::Accepted => match kept {
            Some(true) => RETAINED,
            Some(false) => REMOVED,
            None => TAKEN,
        },
        Action::Partial => PARTIAL,
        Action::Corrected => CORRECTED,
        Action::Rejected => REJECTED,
        Action::Ignored => IGNORED,
    };
    let vetoed = inputs.user_rating.is_some_and(|r| r < 0) || inputs.execution_success == Some(false);
    Some(if vetoed { reward.min(REJECTED) } else { reward })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Inputs;

    fn row(action: Action, inputs: Inputs) -> CurationRow {
        CurationRow {
            action,
            suggestion: "x = 1".into(),
            inputs: Inputs { action, ..inputs },
            ..CurationRow::default()
        }
    }

    #[test]
    fn rewards_follow_the_order_of_outcomes() {
        let plain = Inputs::default();
        let kept = |k: bool| Inputs { retention_7d: Some(true), retention_30d: Some(k), ..Inputs::default() };
        let order = [
            of(&row(Action::Accepted, kept(true))),
            of(&row(Action::Accepted, plain.clone())),
            of(&row(Action::Partial, plain.clone())),
            of(&row(Action::Corrected, plain.clone())),
            of(&row(Action::Accepted, kept(false))),
            of(&row(Action::Rejected, plain.clone())),
            of(&row(Action::Ignored, plain.clone())),
        ];
        let values: Vec<f64> = order.iter().map(|r| r.expect("decided")).collect();
        assert!(values.windows(2).all(|w| w[0] > w[1]), "{values:?}");
        assert_eq!(of(&row(Action::Shown, plain.clone())), None, "undecided");
        let vetoed = Inputs { user_rating: Some(-1), retention_30d: Some(true), ..Inputs::default() };
        assert_eq!(of(&row(Action::Accepted, vetoed)), Some(REJECTED), "a thumbs-down caps it");
        let empty = CurationRow { suggestion: " ".into(), ..row(Action::Accepted, plain) };
        assert_eq!(of(&empty), None);
    }
}
