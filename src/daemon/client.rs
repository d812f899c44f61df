//! The proxy's side of the socket: connect (starting the daemon when none answers), then send
//! requests and await their replies, many in flight at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::protocol::{
    self, CompleteRequest, Completed, ModelSummary, PROTOCOL_VERSION, Reply, Request, Status, Warmed,
};
use super::server::socket_path;
use crate::home::Home;

/// How long a freshly spawned daemon gets to open its socket.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to load its model before answering `Hello`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot start the daemon ({exe}): {reason}")]
    Spawn { exe: String, reason: String },
    #[error("the daemon did not open {socket} within {seconds} s (see the daemon log)")]
    NoSocket { socket: PathBuf, seconds: u64 },
    #[error("cannot reach the daemon at {socket}: {reason}")]
    Connect { socket: PathBuf, reason: String },
    #[error("the running daemon speaks protocol {daemon}, this marunochi {PROTOCOL_VERSION}")]
    Protocol { daemon: u32 },
    #[error("the daemon has no model: {0}")]
    NoModel(String),
    #[error("the daemon went away")]
    Disconnected,
    #[error("the daemon did not answer within {0} s")]
    Timeout(u64),
    #[error("the daemon failed: {0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{dir} is not private to you ({why}); not talking to a daemon there: remove it and try again")]
    Untrusted { dir: PathBuf, why: String },
}

/// Whether the directory holding the daemon's socket is ours alone: owned by this user and not
/// open to anyone else. Another local user who made it could otherwise put their own socket there.
pub fn check_private_dir(dir: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return Ok(()) };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if !meta.is_dir() {
        Some("not a directory".to_owned())
    } else if meta.uid() != me {
        Some(format!("owned by uid {}", meta.uid()))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!("mode {:o}", meta.mode() & 0o777))
    } else {
        None
    };
    why.map_or(Ok(()), |why| Err(ClientError::Untrusted { dir: dir.to_owned(), why }))
}

/// The uid at the other end of `stream`, when it is not this user: the socket's directory is
/// checked already, this is the second lock (both ends check, the daemon and its clients).
pub(crate) fn stranger(stream: &UnixStream) -> Option<u32> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == me => None,
        Ok(peer) => Some(peer.uid()),
        // Unknown counts as a stranger.
        Err(_) => Some(u32::MAX),
    }
}

/// Who the daemon is and what it serves, from its `Welcome`.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: u32,
    pub model: ModelSummary,
}

/// A connection to the daemon. Cheap to clone; every clone shares the one connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    daemon: Daemon,
    outbox: mpsc::UnboundedSender<Request>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

/// A completion on its way; drop it or call [`Client::cancel`] to stop the generation.
pub struct PendingCompletion {
    pub id: u64,
    reply: oneshot::Receiver<Reply>,
}

impl PendingCompletion {
    pub async fn result(self) -> Result<Completed, ClientError> {
        answer(self.reply, |reply| match reply {
            Reply::Completed(completed) => Ok(completed),
            other => Err(Box::new(other)),
        })
        .await
    }
}

/// The reply `wanted` takes (it gives back any other), or what a failure, a cancel or a lost
/// daemon means to the caller.
async fn answer<T>(
    reply: oneshot::Receiver<Reply>,
    wanted: impl FnOnce(Reply) -> Result<T, Box<Reply>>,
) -> Result<T, ClientError> {
    let other = match reply.await.map(wanted) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(other)) => *other,
        Err(_) => return Err(ClientError::Disconnected),
    };
    match other {
        Reply::Failed { cancelled: true, .. } => Err(ClientError::Cancelled),
        Reply::Failed { error, .. } => Err(ClientError::Failed(error)),
        other => Err(ClientError::Failed(format!("unexpected reply {other:?}"))),
    }
}

/// A warm-up on its way (see `Request::Warm`).
pub struct PendingWarm {
    pub id: u64,
    reply: oneshot::Receiver<Reply>,
}

impl PendingWarm {
    pub async fn result(self) -> Result<Warmed, ClientError> {
        answer(self.reply, |reply| match reply {
            Reply::Warmed(warmed) => Ok(warmed),
            other => Err(Box::new(other)),
        })
        .await
    }
}

impl Client {
    /// Connects to the daemon of `home`, starting one (`<exe> daemon`) when none is listening.
    /// `model` is what this client was configured with; it is passed to a daemon we start.
    pub async fn connect_or_spawn(home: &Home, exe: &Path, model: Option<&Path>) -> Result<Client, ClientError> {
        let socket = socket_path(home);
        check_private_dir(home.runtime_dir())?;
        match Client::connect(&socket, model).await {
            Err(ClientError::Connect { .. }) => {}
            Err(ClientError::Protocol { daemon }) => {
                tracing::info!(daemon, ours = PROTOCOL_VERSION, "replacing a daemon that speaks another protocol");
                // An older daemon from before an upgrade: ask it to leave, then start ours.
                if let Ok(stream) = UnixStream::connect(&socket).await {
                    let (_, mut writer) = stream.into_split();
                    let _ = protocol::write(&mut writer, &Request::Shutdown).await;
                }
                wait_for_socket_gone(&socket).await;
            }
            other => return other,
        }
        spawn_daemon(exe, model)?;
        let deadline = tokio::time::Instant::now() + SPAWN_TIMEOUT;
        loop {
            match Client::connect(&socket, model).await {
                Err(ClientError::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(ClientError::Connect { .. }) => {
                    return Err(ClientError::NoSocket { socket, seconds: SPAWN_TIMEOUT.as_secs() });
                }
                other => return other,
            }
        }
    }

    /// Connects to a daemon already listening on `socket`.
    pub async fn connect(socket: &Path, model: Option<&Path>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| ClientError::Connect { socket: socket.to_owned(), reason: e.to_string() })?;
        if let Some(uid) = stranger(&stream) {
            let dir = socket.parent().unwrap_or(socket).to_owned();
            return Err(ClientError::Untrusted { dir, why: format!("its daemon runs as uid {uid}") });
        }
        let (mut reader, mut writer) = stream.into_split();
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            model: model.map(Path::to_owned),
            client: format!("{} (pid {})", std::env::args().nth(1).unwrap_or_default(), std::process::id()),
        };
        let lost = |e: protocol::FrameError| ClientError::Connect { socket: socket.to_owned(), reason: e.to_string() };
        protocol::write(&mut writer, &hello).await.map_err(lost)?;
        let welcome = tokio::time::timeout(LOAD_TIMEOUT, protocol::read::<Reply>(&mut reader))
            .await
            .map_err(|_| ClientError::Timeout(LOAD_TIMEOUT.as_secs()))?
            .map_err(lost)?;
        let daemon = match welcome {
            Reply::Welcome { protocol, .. } if protocol != PROTOCOL_VERSION => {
                return Err(ClientError::Protocol { daemon: protocol });
            }
            Reply::Welcome { pid, model: Some(model), error: None, .. } => Daemon { pid, model },
            Reply::Welcome { error, .. } => {
                return Err(ClientError::NoModel(error.unwrap_or_else(|| "no reason given".into())));
            }
            other => return Err(ClientError::Failed(format!("expected Welcome, got {other:?}"))),
        };
        if let Some(wanted) = model
            && !same_file(wanted, &daemon.model.path)
        {
            tracing::warn!(
                wanted = %wanted.display(),
                serving = %daemon.model.path.display(),
                "the running daemon serves another model; using it (it exits when idle, or stop it to switch)"
            );
        }
        let (outbox, mut outgoing) = mpsc::unbounded_channel::<Request>();
        let inner = Arc::new(Inner {
            daemon,
            outbox,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(async move {
            while let Some(request) = outgoing.recv().await {
                if protocol::write(&mut writer, &request).await.is_err() {
                    break;
                }
            }
        });
        let reading = inner.clone();
        tokio::spawn(async move {
            loop {
                let reply = match protocol::read::<Reply>(&mut reader).await {
                    Ok(reply) => reply,
                    Err(error) => {
                        tracing::warn!(%error, "lost the daemon connection");
                        break;
                    }
                };
                let id = match &reply {
                    Reply::Completed(c) => c.id,
                    Reply::Warmed(w) => w.id,
                    Reply::Failed { id, .. } => *id,
                    Reply::Status(s) => s.id,
                    Reply::Welcome { .. } => continue,
                };
                if let Some(waiter) = reading.pending.lock().expect("pending").remove(&id) {
                    let _ = waiter.send(reply);
                }
            }
            reading.closed.store(true, Ordering::Relaxed);
            // Dropping the senders fails every waiter with `Disconnected`.
            reading.pending.lock().expect("pending").clear();
        });
        Ok(Client { inner })
    }

    pub fn daemon(&self) -> &Daemon {
        &self.inner.daemon
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Sends a completion request (its `id` is assigned here).
    pub fn complete(&self, mut request: CompleteRequest) -> PendingCompletion {
        request.id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = request.id;
        let reply = self.send(id, Request::Complete(request));
        PendingCompletion { id, reply }
    }

    /// Asks the daemon to compute the prompt of a completion at this cursor ahead of the keystroke,
    /// in its idle time, generating nothing (its `id` is assigned here).
    pub fn warm(&self, mut request: CompleteRequest) -> PendingWarm {
        request.id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        request.max_new_tokens = 0;
        let id = request.id;
        let reply = self.send(id, Request::Warm(request));
        PendingWarm { id, reply }
    }

    /// A completion generated in the daemon's idle time, for a keystroke the caller expects (its
    /// `id` is assigned here); any request stops it.
    pub fn complete_ahead(&self, mut request: CompleteRequest) -> PendingCompletion {
        request.id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = request.id;
        let reply = self.send(id, Request::Warm(request));
        PendingCompletion { id, reply }
    }

    pub fn cancel(&self, id: u64) {
        let _ = self.inner.outbox.send(Request::Cancel { id });
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        match self.send(id, Request::Status { id }).await {
            Ok(Reply::Status(status)) => Ok(status),
            Ok(other) => Err(ClientError::Failed(format!("unexpected reply {other:?}"))),
            Err(_) => Err(ClientError::Disconnected),
        }
    }

    fn send(&self, id: u64, request: Request) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        if !self.is_closed() {
            self.inner.pending.lock().expect("pending").insert(id, tx);
            let _ = self.inner.outbox.send(request);
        }
        rx
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Starts `<exe> daemon [--model M]` detached: in a session of its own and, by forking once more
/// before exec, no child of ours, so it outlives this proxy and its editor and is nobody's zombie.
fn spawn_daemon(exe: &Path, model: Option<&Path>) -> Result<(), ClientError> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(exe);
    command.arg("daemon");
    if let Some(model) = model {
        command.arg("--model").arg(model);
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    let failed = |e: std::io::Error| ClientError::Spawn { exe: exe.display().to_string(), reason: e.to_string() };
    // The intermediate process exits at once; an exec failure in the daemon process still comes
    // back through spawn's error pipe.
    command.spawn().and_then(|mut child| child.wait()).map_err(failed)?;
    tracing::info!("daemon started");
    Ok(())
}

async fn wait_for_socket_gone(socket: &Path) {
    for _ in 0..100 {
        if !socket.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
