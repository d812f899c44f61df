//! The daemon process: one per user (per `MARUNOCHI_HOME`), holding the model for every proxy.
//!
//! Start-up order makes racing daemons end as one: take the lock file (a second daemon fails here
//! and leaves), then replace any stale socket, bind, and only then load the model. Clients that
//! connect during the load wait for their `Welcome`. Generations run one at a time on a worker
//! thread (two CPU cores have no room for two); the connections' I/O stays on the async runtime.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc, watch};

use super::protocol::{
    self, CompleteRequest, Completed, FrameError, ModelSummary, PROTOCOL_VERSION, Reply, Request, Warmed,
};
use super::router::Router;
use crate::engine::{Budget, CompletionRequest, Engine, EngineError, LoadOptions, PromptInput, Sampling, prompt};
use crate::home::{self, Home};

pub struct DaemonOptions {
    pub home: Home,
    /// The model to serve; resolved by the caller (flag, config, discovery).
    pub model: Result<PathBuf, String>,
    pub idle_exit: Duration,
    /// Canary and shadow shares (read at start; the rest of `[rollout]` at every check).
    pub rollout: crate::config::RolloutConfig,
    /// Background jobs (`jobs::daemon_jobs`), each run on a thread of its own while the daemon lives.
    pub jobs: Vec<Box<dyn super::Job>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "the socket path {0} is too long for a Unix socket; set MARUNOCHI_HOME or XDG_RUNTIME_DIR to a shorter path"
    )]
    PathTooLong(PathBuf),
    #[error("{0}")]
    Untrusted(String),
}

/// How a daemon run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served until idle, a signal or a shutdown request.
    Served,
    /// Another daemon holds the lock: it serves, this one is not needed.
    AlreadyRunning,
}

pub fn socket_path(home: &Home) -> PathBuf {
    home.runtime_dir().join("daemon.sock")
}

fn lock_path(home: &Home) -> PathBuf {
    home.runtime_dir().join("daemon.lock")
}

/// Runs the daemon until it has been idle for `idle_exit`, is told to shut down, or gets SIGTERM/SIGINT.
pub fn run(options: DaemonOptions) -> Result<Outcome, DaemonError> {
    let dir = options.home.runtime_dir().to_owned();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DaemonError::Io { path, source }
    };
    home::create_private_dir(&dir).map_err(io(&dir))?;
    // An existing directory may have been created by someone else with looser rights.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    // ...and the rights are only half of it: a directory another user owns stays theirs.
    super::client::check_private_dir(&dir).map_err(|e| DaemonError::Untrusted(e.to_string()))?;
    let socket = socket_path(&options.home);
    if socket.as_os_str().len() >= 108 {
        return Err(DaemonError::PathTooLong(socket));
    }
    let lock_file = lock_path(&options.home);
    let Some(lock) = home::try_lock(&lock_file).map_err(io(&lock_file))? else {
        tracing::info!("another daemon holds {}; leaving", lock_file.display());
        return Ok(Outcome::AlreadyRunning);
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io(Path::new("tokio runtime")))?;
    let result = runtime.block_on(serve(options, &socket));
    // Removed while we still hold the lock, so no newer daemon's socket can be deleted by mistake.
    let _ = std::fs::remove_file(&socket);
    drop(lock);
    result.map(|()| Outcome::Served)
}

/// The loaded model as connections see it: `None` while loading.
type ModelState = Option<Result<Arc<Engine>, String>>;

struct Shared {
    model: watch::Receiver<ModelState>,
    jobs: std::sync::mpsc::Sender<Work>,
    clients: watch::Sender<usize>,
    shutdown: Notify,
    model_loads: AtomicU32,
    completions: Arc<AtomicU64>,
    warmed: Arc<AtomicU64>,
    router: Arc<Mutex<Router>>,
    /// Set by every new completion or warm-up request: the warm-up or shadow generation in
    /// progress gives way to it.
    interrupt: Arc<AtomicBool>,
}

async fn serve(options: DaemonOptions, socket: &Path) -> Result<(), DaemonError> {
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!("removed a stale socket at {}", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(DaemonError::Io { path: socket.to_owned(), source }),
    }
    let listener = UnixListener::bind(socket).map_err(|source| DaemonError::Io { path: socket.into(), source })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| DaemonError::Io { path: socket.into(), source })?;
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "daemon listening");

    let (model_tx, model_rx) = watch::channel(None);
    let (jobs, job_rx) = std::sync::mpsc::channel();
    let (clients, mut client_count) = watch::channel(0usize);
    let shared = Arc::new(Shared {
        model: model_rx,
        jobs,
        clients,
        shutdown: Notify::new(),
        model_loads: AtomicU32::new(0),
        completions: Arc::new(AtomicU64::new(0)),
        warmed: Arc::default(),
        router: Arc::new(Mutex::new(Router::new(options.home.adapters_dir(), &options.rollout))),
        interrupt: Arc::default(),
    });
    spawn_loader(options.model, model_tx, &shared);
    for job in options.jobs {
        spawn_job(job);
    }
    spawn_worker(job_rx, &shared, options.home.db_path());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DaemonError::Io { path: "SIGTERM handler".into(), source })?;
    // Without a model nothing can be served: leave soon, so a fixed config is picked up next time.
    let failed_idle_exit = options.idle_exit.min(Duration::from_secs(5));
    let mut model_changes = shared.model.clone();
    loop {
        let idle = *client_count.borrow_and_update() == 0;
        let idle_exit =
            if matches!(*shared.model.borrow(), Some(Err(_))) { failed_idle_exit } else { options.idle_exit };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if let Some(uid) = super::client::stranger(&stream) => {
                    tracing::warn!(uid, "a connection from another user; closed");
                }
                Ok((stream, _)) => {
                    shared.clients.send_modify(|n| *n += 1);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(error) = connection(stream, &shared).await {
                            tracing::debug!(%error, "connection ended");
                        }
                        shared.clients.send_modify(|n| *n -= 1);
                    });
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            _ = client_count.changed() => {}
            Ok(()) = model_changes.changed() => {}
            _ = tokio::time::sleep(idle_exit), if idle => {
                tracing::info!("no clients for {idle_exit:?}; exiting");
                break;
            }
            _ = shared.shutdown.notified() => {
                tracing::info!("shutdown requested");
                break;
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM; exiting");
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

/// Runs `job` every period, the first time one period after start.
fn spawn_job(mut job: Box<dyn super::Job>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(job.period());
            job.run();
        }
    });
}

fn spawn_loader(model: Result<PathBuf, String>, state: watch::Sender<ModelState>, shared: &Arc<Shared>) {
    let shared = shared.clone();
    std::thread::spawn(move || {
        let loaded = model.and_then(|path| {
            let started = Instant::now();
            let engine = Engine::load(&path, &LoadOptions::default()).map_err(|e| e.to_string())?;
            shared.model_loads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(model = %path.display(), ms = started.elapsed().as_millis() as u64, "model ready");
            Ok(Arc::new(engine))
        });
        if let Err(error) = &loaded {
            tracing::error!("no model to serve: {error}");
        }
        let _ = state.send(Some(loaded));
    });
}

fn summary(engine: &Engine) -> ModelSummary {
    let info = engine.info();
    ModelSummary {
        name: info.name(),
        path: info.path.clone(),
        family: info.family.into(),
        quantization: info.quantization.clone(),
    }
}

/// How long a new connection has to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// One proxy's connection: `Hello`, then requests until it goes away.
async fn connection(stream: UnixStream, shared: &Arc<Shared>) -> Result<(), FrameError> {
    let (mut reader, mut writer) = stream.into_split();
    // A connection that never says who it is must not keep the daemon alive.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, protocol::read(&mut reader)).await;
    let Ok(Request::Hello { protocol: theirs, client, .. }) = hello.unwrap_or(Err(FrameError::Closed)) else {
        tracing::warn!("a connection without a Hello within {HELLO_TIMEOUT:?}; closed");
        return Ok(());
    };
    tracing::info!(client, "client connected");
    let mut model = shared.model.clone();
    let state = model.wait_for(Option::is_some).await.map(|s| s.clone()).ok().flatten();
    let (model_summary, error) = match (&state, theirs == PROTOCOL_VERSION) {
        (_, false) => (None, Some(format!("this daemon speaks protocol {PROTOCOL_VERSION}, the client {theirs}"))),
        (Some(Ok(engine)), true) => (Some(summary(engine)), None),
        (Some(Err(error)), true) => (None, Some(error.clone())),
        (None, true) => (None, Some("the model loader stopped".into())),
    };
    let welcome = Reply::Welcome { protocol: PROTOCOL_VERSION, pid: std::process::id(), model: model_summary, error };
    protocol::write(&mut writer, &welcome).await?;

    let (replies, mut outbox) = mpsc::unbounded_channel::<Reply>();
    let flags: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>> = Arc::default();
    let writer_flags = flags.clone();
    let write_task = tokio::spawn(async move {
        while let Some(reply) = outbox.recv().await {
            if let Reply::Completed(Completed { id, .. })
            | Reply::Warmed(Warmed { id, .. })
            | Reply::Failed { id, .. } = &reply
            {
                writer_flags.lock().expect("flags").remove(id);
            }
            if protocol::write(&mut writer, &reply).await.is_err() {
                break;
            }
        }
    });
    // The newest request per document: an older one for the same document is cancelled.
    let mut latest: HashMap<String, Arc<AtomicBool>> = HashMap::new();
    let result = loop {
        let request = match protocol::read::<Request>(&mut reader).await {
            Ok(request) => request,
            Err(FrameError::Closed) => break Ok(()),
            Err(error) => break Err(error),
        };
        match request {
            Request::Complete(request) => {
                shared.interrupt.store(true, Ordering::Relaxed);
                let cancel = Arc::new(AtomicBool::new(false));
                if let Some(older) = latest.insert(request.document.clone(), cancel.clone()) {
                    older.store(true, Ordering::Relaxed);
                }
                flags.lock().expect("flags").insert(request.id, cancel.clone());
                let job = Job { request, cancel, replies: replies.clone(), received: Instant::now() };
                send_work(shared, Work::Complete(job));
            }
            Request::Warm(request) => {
                shared.interrupt.store(true, Ordering::Relaxed);
                let cancel = Arc::new(AtomicBool::new(false));
                flags.lock().expect("flags").insert(request.id, cancel.clone());
                let job = Job { request, cancel, replies: replies.clone(), received: Instant::now() };
                send_work(shared, Work::Warm(job));
            }
            Request::Cancel { id } => {
                if let Some(flag) = flags.lock().expect("flags").get(&id) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            Request::Status { id } => {
                let model = shared.model.borrow().clone().and_then(Result::ok).map(|e| summary(&e));
                let status = protocol::Status {
                    id,
                    pid: std::process::id(),
                    model,
                    model_loads: shared.model_loads.load(Ordering::Relaxed),
                    clients: *shared.clients.borrow(),
                    completions: shared.completions.load(Ordering::Relaxed),
                    warmed: shared.warmed.load(Ordering::Relaxed),
                    adapters: shared.router.lock().expect("router").loaded(),
                };
                let _ = replies.send(Reply::Status(status));
            }
            Request::Shutdown => shared.shutdown.notify_one(),
            Request::Hello { .. } => tracing::warn!("a second Hello on one connection; ignored"),
        }
    };
    // Whatever this client still waits for is of no use to anyone now.
    for flag in flags.lock().expect("flags").values() {
        flag.store(true, Ordering::Relaxed);
    }
    drop(replies);
    let _ = write_task.await;
    tracing::info!(client, "client disconnected");
    result
}

/// Hands work to the worker, or answers at once that there is no worker any more.
fn send_work(shared: &Shared, work: Work) {
    if let Err(std::sync::mpsc::SendError(Work::Complete(job) | Work::Warm(job))) = shared.jobs.send(work) {
        let id = job.request.id;
        let _ = job.replies.send(Reply::Failed { id, error: "the daemon is stopping".into(), cancelled: false });
    }
}

/// What the worker thread is handed: a completion to serve now, or a warm-up for an idle moment.
enum Work {
    Complete(Job),
    Warm(Job),
}

struct Job {
    request: CompleteRequest,
    cancel: Arc<AtomicBool>,
    replies: mpsc::UnboundedSender<Reply>,
    received: Instant,
}

/// A shadow generation waiting for an idle moment: the request, the shadow adapter, and what the
/// served adapter answered.
struct ShadowJob {
    request: CompleteRequest,
    adapter: String,
    served_model_version: String,
    served_text: String,
    queued: Instant,
}

/// Shadow work waits this long without a request before it starts, and is dropped after
/// `SHADOW_STALE` (its suggestion has been decided long since; the cache is cold anyway).
const IDLE_BEFORE_SHADOW: Duration = Duration::from_millis(500);
const SHADOW_STALE: Duration = Duration::from_secs(60);
const SHADOW_QUEUE: usize = 8;
/// Warm-ups waiting (the newest per document); older ones are answered as cancelled. A warm-up
/// this old is of a place the user has long left.
const WARM_QUEUE: usize = 4;
const WARM_STALE: Duration = Duration::from_secs(30);

fn spawn_worker(jobs: std::sync::mpsc::Receiver<Work>, shared: &Arc<Shared>, db: PathBuf) {
    let (model, router, completions, warmed, interrupt) = (
        shared.model.clone(),
        shared.router.clone(),
        shared.completions.clone(),
        shared.warmed.clone(),
        shared.interrupt.clone(),
    );
    std::thread::spawn(move || {
        let mut shadows: std::collections::VecDeque<ShadowJob> = std::collections::VecDeque::new();
        let mut warms: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
        let mut store: Option<crate::store::Store> = None;
        loop {
            // Cleared before looking for work, so a request arriving any time after it interrupts
            // the warm-up or shadow generation that may follow.
            interrupt.store(false, Ordering::Relaxed);
            use std::sync::mpsc::RecvTimeoutError;
            let work = if !warms.is_empty() {
                jobs.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else if !shadows.is_empty() {
                jobs.recv_timeout(IDLE_BEFORE_SHADOW)
            } else {
                jobs.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let job = match work {
                Ok(Work::Complete(job)) => job,
                Ok(Work::Warm(job)) => {
                    let replaced = warms.iter().position(|w| w.request.document == job.request.document);
                    let dropped = replaced.and_then(|i| warms.remove(i));
                    let dropped = dropped.or_else(|| (warms.len() == WARM_QUEUE).then(|| warms.pop_front()).flatten());
                    if let Some(old) = dropped {
                        let _ = old.replies.send(cancelled(old.request.id));
                    }
                    warms.push_back(job);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let engine = model.borrow().clone().and_then(Result::ok);
                    if let Some(warm) = warms.pop_back() {
                        let reply = match engine {
                            Some(engine) if warm.received.elapsed() < WARM_STALE => {
                                run_warm(&engine, &warm, &router, &interrupt, &warmed)
                            }
                            _ => cancelled(warm.request.id),
                        };
                        let _ = warm.replies.send(reply);
                    } else if let (Some(engine), Some(shadow)) = (engine, shadows.pop_front())
                        && shadow.queued.elapsed() < SHADOW_STALE
                    {
                        run_shadow(&engine, shadow, &interrupt, &db, &mut store, &mut shadows);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let id = job.request.id;
            let reply = if job.cancel.load(Ordering::Relaxed) {
                cancelled(id)
            } else {
                let engine = model.borrow().clone().and_then(Result::ok);
                match engine {
                    Some(engine) => {
                        let route = router.lock().expect("router").route(
                            &engine,
                            &job.request.language,
                            &job.request.document_language,
                        );
                        let served = route.served.as_deref();
                        let reply = complete(&engine, &job, &job.request.document, served, (&job.cancel, "served"));
                        completions.fetch_add(1, Ordering::Relaxed);
                        if let (Some(adapter), Reply::Completed(done)) = (route.shadow, &reply)
                            && let Some(text) = &done.text
                            && route.served.as_deref() != Some(adapter.as_str())
                        {
                            if shadows.len() == SHADOW_QUEUE {
                                shadows.pop_front();
                            }
                            shadows.push_back(ShadowJob {
                                request: job.request.clone(),
                                adapter,
                                served_model_version: done.model_version.clone(),
                                served_text: text.clone(),
                                queued: Instant::now(),
                            });
                        }
                        reply
                    }
                    None => Reply::Failed { id, error: "no model is loaded".into(), cancelled: false },
                }
            };
            let _ = job.replies.send(reply);
        }
    });
}

fn cancelled(id: u64) -> Reply {
    Reply::Failed { id, error: "cancelled".into(), cancelled: true }
}

/// Computes a warm-up's prompt with the adapter most of its language's requests are served with;
/// any newer request stops it between prefill chunks.
fn run_warm(engine: &Engine, job: &Job, router: &Mutex<Router>, interrupt: &AtomicBool, warmed: &AtomicU64) -> Reply {
    let request = &job.request;
    if job.cancel.load(Ordering::Relaxed) {
        return cancelled(request.id);
    }
    let adapter = router.lock().expect("router").active(engine, &request.language, &request.document_language);
    if request.max_new_tokens > 0 {
        let reply = complete(engine, job, &request.document, adapter.as_deref(), (interrupt, "ahead"));
        if matches!(reply, Reply::Completed(_)) {
            warmed.fetch_add(1, Ordering::Relaxed);
        }
        return reply;
    }
    let result = with_completion_request(engine, request, &request.document, adapter.as_deref(), |completion| {
        engine.warm(completion, interrupt)
    });
    match result {
        Ok(done) => {
            warmed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                language = request.language,
                prompt = done.prompt_tokens,
                reused = done.reused_tokens,
                prefill_ms = done.prefill_ms as u64,
                "warmed"
            );
            Reply::Warmed(Warmed {
                id: request.id,
                prompt_tokens: done.prompt_tokens,
                reused_tokens: done.reused_tokens,
                prefill_ms: done.prefill_ms,
                total_ms: job.received.elapsed().as_secs_f64() * 1000.0,
            })
        }
        Err(EngineError::Cancelled) => cancelled(request.id),
        Err(error) => {
            tracing::warn!(%error, "warm-up failed");
            Reply::Failed { id: request.id, error: error.to_string(), cancelled: false }
        }
    }
}

/// Generates one shadow sample and keeps it in the store; a request arriving meanwhile interrupts
/// it (it goes back to the front of the queue, until it is a minute old).
fn run_shadow(
    engine: &Engine,
    shadow: ShadowJob,
    interrupt: &Arc<AtomicBool>,
    db: &Path,
    store: &mut Option<crate::store::Store>,
    queue: &mut std::collections::VecDeque<ShadowJob>,
) {
    let (replies, _ignored) = mpsc::unbounded_channel();
    let job = Job { request: shadow.request.clone(), cancel: interrupt.clone(), replies, received: Instant::now() };
    let cache_key = format!("shadow\0{}", shadow.request.document);
    let text = match complete(engine, &job, &cache_key, Some(&shadow.adapter), (interrupt, "shadow")) {
        Reply::Completed(done) => done.text.unwrap_or_default(),
        Reply::Failed { cancelled: true, .. } => {
            queue.push_front(shadow);
            return;
        }
        _ => return,
    };
    let Some((language, version)) = shadow.adapter.split_once('/') else { return };
    let sample = crate::store::ShadowSample {
        language: language.to_owned(),
        version: version.to_owned(),
        document: shadow.request.document.clone(),
        request_hash: crate::store::request_hash(
            &shadow.request.document,
            &shadow.request.prefix,
            &shadow.request.suffix,
        ),
        served_model_version: shadow.served_model_version,
        served_text: shadow.served_text,
        shadow_text: text,
    };
    if store.is_none() {
        match crate::store::Store::open(db) {
            Ok(opened) => *store = Some(opened),
            Err(error) => {
                tracing::warn!(%error, "a shadow sample cannot be kept");
                return;
            }
        }
    }
    if let Some(Err(error)) = store.as_mut().map(|s| s.record_shadow(&sample)) {
        tracing::warn!(%error, "a shadow sample cannot be kept");
    }
}

/// The engine's request for a daemon request: `context_share` is a percent of the prompt; the
/// window keeps the rest, three parts prefix to one part suffix (README, `[serving]`).
fn with_completion_request<T>(
    engine: &Engine,
    request: &CompleteRequest,
    cache_key: &str,
    adapter: Option<&str>,
    run: impl FnOnce(&CompletionRequest) -> T,
) -> T {
    let open_files: Vec<prompt::ContextFile> =
        request.open_files.iter().map(|f| prompt::ContextFile { path: &f.path, text: &f.text }).collect();
    let recent_edits: Vec<prompt::RecentEdit> = request
        .recent_edits
        .iter()
        .map(|e| prompt::RecentEdit { path: &e.path, before: &e.before, after: &e.after })
        .collect();
    let max_context = engine.config().max_position;
    let context_share = request.context_share.min(100);
    let budget = Budget {
        max_prompt_tokens: request.prompt_tokens.min(max_context.saturating_sub(request.max_new_tokens + 1)),
        prefix_share: (100 - context_share) * 3 / 4,
        suffix_share: (100 - context_share) / 4,
        context_share,
    };
    run(&CompletionRequest {
        cache_key,
        input: PromptInput {
            path: &request.path,
            prefix: &request.prefix,
            suffix: &request.suffix,
            repo_name: request.repo_name.as_deref(),
            open_files: &open_files,
            recent_edits: &recent_edits,
        },
        adapter,
        sampling: Sampling::Greedy,
        max_new_tokens: request.max_new_tokens,
        budget,
        stop: &[],
    })
}

/// Generates `job`'s completion, stopped when `cancel` is raised (the job's own flag, or the
/// interrupt for work done in idle time); `kind` (`served`, `ahead`, `shadow`) goes to the log.
fn complete(
    engine: &Engine,
    job: &Job,
    cache_key: &str,
    adapter: Option<&str>,
    (cancel, kind): (&AtomicBool, &str),
) -> Reply {
    let request = &job.request;
    let result =
        with_completion_request(engine, request, cache_key, adapter, |completion| engine.complete(completion, cancel));
    let model_version = match adapter {
        Some(adapter) => format!("{}+{adapter}", engine.info().name()),
        None => engine.info().name(),
    };
    match result {
        Ok(completion) => {
            let stats = &completion.stats;
            tracing::info!(
                language = request.language,
                prompt = stats.prompt_tokens,
                reused = stats.reused_tokens,
                generated = stats.generated_tokens,
                prefill_ms = stats.prefill_ms as u64,
                total_ms = job.received.elapsed().as_millis() as u64,
                kind,
                "completion"
            );
            Reply::Completed(Completed {
                id: request.id,
                text: completion.text,
                model_version,
                confidence: completion.stats.mean_logprob,
                prompt_tokens: completion.stats.prompt_tokens,
                reused_tokens: completion.stats.reused_tokens,
                generated_tokens: completion.stats.generated_tokens,
                prefill_ms: completion.stats.prefill_ms,
                total_ms: job.received.elapsed().as_secs_f64() * 1000.0,
            })
        }
        Err(EngineError::Cancelled) => cancelled(request.id),
        Err(error) => {
            tracing::warn!(%error, "completion failed");
            Reply::Failed { id: request.id, error: error.to_string(), cancelled: false }
        }
    }
}
