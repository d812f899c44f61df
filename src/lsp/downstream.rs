//! The real language server as a child process.
//!
//! Every start is an *incarnation* with its own number, so messages and exit notices from a server
//! that has already been replaced can be recognised and dropped.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::codec::Incoming;
use super::transport::{self, Backlog, Writer};

/// How long a server gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(1000);
/// How long we wait for a dead server's last buffered output (a grandchild can hold its pipe open).
const DRAIN_GRACE: Duration = Duration::from_millis(1000);

#[derive(Debug)]
pub(crate) enum ServerEvent {
    Message { incarnation: u32, item: Incoming },
    Exited { incarnation: u32, status: String },
}

pub(crate) struct Downstream {
    writer: Writer,
    stop: Option<oneshot::Sender<()>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Downstream {
    pub(crate) fn spawn<E>(
        command: &[String],
        incarnation: u32,
        max_message_bytes: usize,
        backlog: Arc<Backlog>,
        events: mpsc::UnboundedSender<E>,
    ) -> std::io::Result<Downstream>
    where
        E: From<ServerEvent> + Send + 'static,
    {
        let (program, args) = command.split_first().expect("the CLI requires a server command");
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let writer = Writer::spawn_async(child.stdin.take().expect("stdin is piped"), backlog);
        let reader_events = events.clone();
        let reader = transport::spawn_async_reader(
            child.stdout.take().expect("stdout is piped"),
            max_message_bytes,
            reader_events,
            move |item| E::from(ServerEvent::Message { incarnation, item }),
        );
        let (stop, stop_rx) = oneshot::channel();
        let supervisor = tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => describe(status),
                _ = stop_rx => terminate(&mut child).await,
            };
            // The reader delivers what the server wrote before dying ahead of the exit notice.
            let _ = tokio::time::timeout(DRAIN_GRACE, reader).await;
            let _ = events.send(E::from(ServerEvent::Exited { incarnation, status }));
        });
        tracing::info!(?command, incarnation, "language server started");
        Ok(Downstream { writer, stop: Some(stop), supervisor })
    }

    pub(crate) fn send(&self, message: &Value) {
        self.writer.send(message);
    }

    pub(crate) fn send_body(&self, body: &[u8]) {
        self.writer.send_body(body);
    }

    /// Asks the server to go (SIGTERM, then SIGKILL after a grace period) and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.supervisor).await;
    }
}

async fn terminate(child: &mut Child) -> String {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        if let Ok(status) = tokio::time::timeout(TERM_GRACE, child.wait()).await {
            return describe(status);
        }
    }
    let _ = child.kill().await;
    describe(child.wait().await)
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => status.to_string(),
        },
        Err(error) => format!("unknown status ({error})"),
    }
}

/// If marunochi itself is killed (SIGKILL, OOM), the kernel stops the server too, so no orphaned
/// language server keeps running after the editor is gone. The signal follows the *thread* that
/// spawned the child, which is why the proxy runs on a current-thread runtime (the main thread).
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
