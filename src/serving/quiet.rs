//! Staying silent (`[serving] stay_silent`): a suggestion the user's own P(taken) model
//! (`crate::silence`, learned from the store, fitted again every ten minutes or after
//! `reload::NEWS` suggestions shown) puts below its threshold is not shown. One in [`EXPLORE`] of
//! them is shown anyway, so the model keeps learning what it would otherwise never see again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::Suggestion;
use super::reload::FromStore;
use crate::silence::{Filters, Shape};

/// Every this many suggestions the filter would hold back, one is shown.
const EXPLORE: u64 = 10;

pub(super) struct Quiet {
    filters: FromStore<Filters>,
    held_back: AtomicU64,
    would_have: AtomicU64,
}

impl Quiet {
    pub(super) fn start(db: PathBuf) -> Quiet {
        Quiet {
            filters: FromStore::start(db, "the stay-silent filter", Filters::load),
            held_back: 0.into(),
            would_have: 0.into(),
        }
    }

    /// Whether `suggestion` is held back.
    pub(super) fn holds_back(&self, suggestion: &Suggestion) -> bool {
        let shape = Shape {
            language: &suggestion.language,
            text: &suggestion.text,
            kind: suggestion.kind,
            confidence: suggestion.confidence,
            before: &suggestion.prefix,
            after: &suggestion.suffix,
            sources: &suggestion.sources,
        };
        let silent = self.filters.with(|filters| filters.silent(&shape, crate::clock::now_ms())).unwrap_or(false);
        if !silent || self.would_have.fetch_add(1, Ordering::Relaxed) % EXPLORE == EXPLORE - 1 {
            self.filters.news();
            return false;
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The user took a suggestion in `language` just now.
    pub(super) fn taken(&self, language: &str) {
        self.filters.with(|filters| filters.taken(language, crate::clock::now_ms()));
    }

    /// For `marunochi.status`: each language's model and threshold, and what this proxy held back.
    pub(super) fn status(&self) -> Value {
        let summary = self.filters.with(|filters| filters.summary());
        json!({
            "held_back": self.held_back.load(Ordering::Relaxed),
            "filters": summary.map_or_else(|| json!("loading"), |summary| json!(summary)),
        })
    }
}
