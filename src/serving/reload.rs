//! What a serving source reads from the store (own examples, the stay-silent filter): read on a
//! thread at start and again every [`RELOAD`] when asked for; a request never waits for it and goes
//! with the last copy read (or without, before the first).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// How often the store is read again.
const RELOAD: Duration = Duration::from_secs(600);

struct Loaded<T> {
    value: Option<T>,
    loaded_at: Option<Instant>,
    loading: bool,
}

pub(super) struct FromStore<T> {
    db: PathBuf,
    /// What is read, for the log.
    what: &'static str,
    load: fn(&Store) -> Result<T, StoreError>,
    state: Arc<Mutex<Loaded<T>>>,
}

impl<T: Send + 'static> FromStore<T> {
    pub(super) fn start(db: PathBuf, what: &'static str, load: fn(&Store) -> Result<T, StoreError>) -> FromStore<T> {
        let state = Arc::new(Mutex::new(Loaded { value: None, loaded_at: None, loading: false }));
        let source = FromStore { db, what, load, state };
        source.reload_if_due();
        source
    }

    /// Reads the store again on a thread when it was never read or the copy is older than [`RELOAD`].
    fn reload_if_due(&self) {
        let Ok(mut state) = self.state.try_lock() else { return };
        if state.loading || state.loaded_at.is_some_and(|at| at.elapsed() < RELOAD) {
            return;
        }
        state.loading = true;
        let (db, what, load, shared) = (self.db.clone(), self.what, self.load, self.state.clone());
        std::thread::spawn(move || {
            let loaded = Store::open(&db).and_then(|store| load(&store));
            let mut state = shared.lock().expect("reloaded state");
            state.loading = false;
            state.loaded_at = Some(Instant::now());
            match loaded {
                Ok(value) => state.value = Some(value),
                Err(error) => tracing::warn!(%error, "{what}: the store cannot be read"),
            }
        });
    }

    /// `f` of the last copy read; `None` before the first, or while a new copy is being swapped in.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.reload_if_due();
        let mut state = self.state.try_lock().ok()?;
        state.value.as_mut().map(f)
    }
}
