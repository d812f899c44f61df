//! What a serving source reads from the store (own examples, the stay-silent filter): read on a
//! thread at start and again every [`RELOAD`] — or sooner, once its owner has told it of [`NEWS`]
//! new rows — when asked for; a request never waits for it and goes with the last copy read (or
//! without, before the first).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// How often the store is read again.
const RELOAD: Duration = Duration::from_secs(600);
/// After this many new rows the store is read again however young the copy is: an active user's
/// outcomes should reach the filter within minutes, not ten of them.
const NEWS: u64 = 25;

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
    /// Rows the owner knows were added since the last read began.
    news: AtomicU64,
}

impl<T: Send + 'static> FromStore<T> {
    pub(super) fn start(db: PathBuf, what: &'static str, load: fn(&Store) -> Result<T, StoreError>) -> FromStore<T> {
        let state = Arc::new(Mutex::new(Loaded { value: None, loaded_at: None, loading: false }));
        let source = FromStore { db, what, load, state, news: 0.into() };
        source.reload_if_due();
        source
    }

    /// The owner knows of one more row the next read will see (a suggestion shown, whose outcome
    /// the store will hold by the time [`NEWS`] more have been shown).
    pub(super) fn news(&self) {
        self.news.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the store again on a thread when it was never read, the copy is older than
    /// [`RELOAD`] or [`NEWS`] rows have come since.
    fn reload_if_due(&self) {
        let Ok(mut state) = self.state.try_lock() else { return };
        let fresh = state.loaded_at.is_some_and(|at| at.elapsed() < RELOAD) && self.news.load(Ordering::Relaxed) < NEWS;
        if state.loading || fresh {
            return;
        }
        state.loading = true;
        self.news.store(0, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    static READS: AtomicUsize = AtomicUsize::new(0);

    fn count_read(_: &Store) -> Result<usize, StoreError> {
        Ok(READS.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn settled(source: &FromStore<usize>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = source.state.lock().unwrap();
            if let (false, Some(value)) = (state.loading, state.value) {
                return value;
            }
            drop(state);
            assert!(Instant::now() < deadline, "the read never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_young_copy_is_read_again_once_enough_new_rows_have_come() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("marunochi.db");
        Store::open(&db).unwrap();
        let source = FromStore::start(db, "a count", count_read);
        assert_eq!(settled(&source), 1);
        for _ in 0..NEWS - 1 {
            source.news();
        }
        source.with(|_| ());
        assert_eq!(settled(&source), 1, "read again before enough news");
        source.news();
        source.with(|_| ());
        assert_eq!(settled(&source), 2, "not read again after {NEWS} news");
        source.with(|_| ());
        assert_eq!(settled(&source), 2, "the news were not counted from the new read");
    }
}
