//! Background work in one place: every job that runs on its own, how often, and on what condition.
//! Entries: [`WriterJobs`] (run by the capture writer after each pass), [`daemon_jobs`] (run by
//! the daemon, each on a thread of its own), [`catch_up`] (`marunochi retention sweep`).
//!
//! | job | where | when |
//! |---|---|---|
//! | retention checks that fell due | capture writer | at start, then every 10 s |
//! | quality rescoring | capture writer | after a pass that wrote or swept |
//! | drift events | capture writer | with the first sweep, then every 10 minutes |
//! | training schedule ([`schedule::tick`]) | daemon | every 5 minutes |
//! | rollout checks (`deploy::rollout::tick`) | daemon | every `[rollout] check_every_secs`, when `automatic` |
//!
//! The stages themselves (retention, quality, train, eval, deploy) are plain libraries; this
//! module is the only one that decides when they run.

pub mod schedule;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::home::Home;
use crate::retention::{Sweep, SweepReport};
use crate::store::{Store, StoreError};

/// A period: due when it has run out, then again a period later.
struct Every {
    period: Duration,
    last: Option<Instant>,
}

impl Every {
    /// Due at once (the first run catches up), then every `period`.
    fn from_start(period: Duration) -> Every {
        Every { period, last: None }
    }

    fn due(&self) -> bool {
        self.last.is_none_or(|at| at.elapsed() >= self.period)
    }

    fn mark(&mut self) {
        self.last = Some(Instant::now());
    }
}

/// How often the writer runs the retention checks that fell due.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long one of those sweeps may run: the captures wait behind it, so a backlog (a night of
/// 7-day checks) is worked off 250 ms at a time.
const SWEEP_BUDGET: Duration = Duration::from_millis(250);
/// How often it recomputes the drift metrics (a scan of the whole store; they are weekly).
const DRIFT_EVERY: Duration = Duration::from_secs(600);

/// The capture writer's jobs: retention checks, rescoring and drift, on the writer's store and
/// with the open documents' text as the editor has it.
pub struct WriterJobs {
    survival_threshold: f64,
    sweep: Every,
    drift: Every,
}

impl WriterJobs {
    /// `survival_threshold`: the share of accepted code that must survive to count as kept.
    pub fn new(survival_threshold: f64) -> WriterJobs {
        WriterJobs { survival_threshold, sweep: Every::from_start(SWEEP_EVERY), drift: Every::from_start(DRIFT_EVERY) }
    }
}

impl crate::capture::Background for WriterJobs {
    fn after_pass(
        &mut self,
        store: &mut Store,
        open_document: &dyn Fn(&Path) -> Option<String>,
        wrote: bool,
        closing: bool,
    ) {
        let sweep_due = self.sweep.due();
        if sweep_due && !closing {
            self.sweep.mark();
            let sweep = Sweep { threshold: self.survival_threshold, open_document, budget: Some(SWEEP_BUDGET) };
            match sweep.run(store, crate::clock::now_ms()) {
                Ok(report) if report.checked > 0 => tracing::info!(?report, "retention checks"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "retention checks failed"),
            }
            if self.drift.due() {
                self.drift.mark();
                match crate::quality::drift::update(store) {
                    Ok(0) => {}
                    Ok(new) => tracing::info!(new, "drift events"),
                    Err(error) => tracing::error!(%error, "drift not computed"),
                }
            }
        }
        if (wrote || sweep_due)
            && let Err(error) = crate::quality::rescore(store)
        {
            tracing::error!(%error, "quality scores not updated");
        }
    }
}

/// How often the daemon asks the training schedule whether to train ([`schedule::tick`]).
const SCHEDULE_EVERY: Duration = Duration::from_secs(300);

/// The daemon's jobs. Each runs on a thread of its own (a training run blocks its thread until
/// the night window ends, and the rollout checks go on meanwhile); config is read at every run,
/// so an edit applies at the next one.
pub fn daemon_jobs(home: &Home, config: &Config) -> Vec<Box<dyn crate::daemon::Job>> {
    let rollout_every = Duration::from_secs(config.rollout.check_every_secs.max(1));
    vec![Box::new(Training { home: home.clone() }), Box::new(Rollout { home: home.clone(), every: rollout_every })]
}

/// Trains due languages in the night window. The training child stops itself at the window's
/// end and outlives the daemon if the daemon exits first, so no training is lost either way.
struct Training {
    home: Home,
}

impl crate::daemon::Job for Training {
    fn period(&self) -> Duration {
        SCHEDULE_EVERY
    }

    fn run(&mut self) {
        let Ok(config) = Config::load(&self.home.config_file()) else { return };
        match schedule::tick(&schedule::current_exe(), &self.home, &config) {
            Ok(tick) => tracing::debug!(?tick, "training schedule"),
            Err(error) => tracing::warn!(%error, "training schedule"),
        }
    }
}

/// Moves rollouts on (shadow → canary → active) and rolls back what does worse, on the user's
/// outcomes as they come in.
struct Rollout {
    home: Home,
    every: Duration,
}

impl crate::daemon::Job for Rollout {
    fn period(&self) -> Duration {
        self.every
    }

    fn run(&mut self) {
        let Ok(config) = Config::load(&self.home.config_file()) else { return };
        if !config.rollout.automatic {
            return;
        }
        match crate::deploy::rollout::tick(&self.home, &config) {
            Ok(report) => {
                for step in report.steps {
                    tracing::info!(%step, "rollout");
                }
                for wait in report.waiting {
                    tracing::debug!(%wait, "rollout");
                }
            }
            Err(error) => tracing::warn!(%error, "rollout check"),
        }
    }
}

/// `marunochi retention sweep`: the checks due by `now_ms` in the store at `db`, from the files
/// on disk (no editor is asked), then the quality scores and drift events they change. Returns
/// what the sweep did and how many interactions were scored again.
pub fn catch_up(db: &Path, now_ms: i64, threshold: f64) -> Result<(SweepReport, usize), StoreError> {
    let mut store = Store::open(db)?;
    let report = Sweep { threshold, open_document: &|_| None, budget: None }.run(&mut store, now_ms)?;
    let rescored = crate::quality::rescore(&mut store)?;
    crate::quality::drift::update(&mut store)?;
    Ok((report, rescored))
}
