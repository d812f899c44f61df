//! Moving frames between the event loop and byte streams.
//!
//! Each peer gets one reader (bytes → [`Incoming`] items → the loop's event channel) and one
//! [`Writer`] (frames from the loop → bytes, in order). The editor's stdio is served by two plain
//! threads: blocking reads and writes on a pipe are cheaper than tokio's stdio, which hops through
//! the blocking pool on every call.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, Decoder, FrameReader, Incoming};

/// How many bytes may wait for the language server before the editor's reader pauses.
const BACKLOG_LIMIT: usize = 4 << 20;

/// Bytes given to a [`Writer`] and not yet written to its peer. The editor's reader waits while
/// the server's backlog is over [`BACKLOG_LIMIT`], so a server that stops reading slows the editor
/// down, as a direct pipe would, instead of growing the proxy's memory without end.
#[derive(Default)]
pub(crate) struct Backlog {
    queued: Mutex<usize>,
    drained: Condvar,
}

impl Backlog {
    fn add(&self, bytes: usize) {
        *self.queued.lock().unwrap_or_else(|e| e.into_inner()) += bytes;
    }

    fn remove(&self, bytes: usize) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        *queued = queued.saturating_sub(bytes);
        if *queued <= BACKLOG_LIMIT {
            self.drained.notify_all();
        }
    }

    /// Blocks while more than [`BACKLOG_LIMIT`] bytes wait.
    pub(crate) fn wait_for_room(&self) {
        let queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.drained.wait_while(queued, |queued| *queued > BACKLOG_LIMIT).unwrap_or_else(|e| e.into_inner()));
    }
}

/// Sends frames to one peer, in the order they were given.
pub(crate) struct Writer {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    backlog: Arc<Backlog>,
    done: oneshot::Receiver<()>,
}

impl Writer {
    pub(crate) fn send(&self, message: &Value) {
        self.push(codec::encode(message));
    }

    /// Sends an already serialised body.
    pub(crate) fn send_body(&self, body: &[u8]) {
        self.push(codec::frame(body));
    }

    fn push(&self, frame: Vec<u8>) {
        let bytes = frame.len();
        self.backlog.add(bytes);
        // A closed peer is noticed by its reader; only the count needs putting right.
        if self.frames.send(frame).is_err() {
            self.backlog.remove(bytes);
        }
    }

    /// Flushes everything sent so far, then closes the stream.
    pub(crate) async fn close(self) {
        drop(self.frames);
        let _ = self.done.await;
    }

    /// A writer on an async stream (a child's stdin), counting what waits in `backlog`.
    pub(crate) fn spawn_async<W: AsyncWrite + Unpin + Send + 'static>(stream: W, backlog: Arc<Backlog>) -> Writer {
        let (frames, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (done_tx, done) = oneshot::channel();
        let count = backlog.clone();
        tokio::spawn(async move {
            let mut out = BufWriter::new(stream);
            'outer: while let Some(frame) = rx.recv().await {
                let written = out.write_all(&frame).await;
                count.remove(frame.len());
                if written.is_err() {
                    break;
                }
                // Drain a burst before the one flush.
                while let Ok(frame) = rx.try_recv() {
                    let written = out.write_all(&frame).await;
                    count.remove(frame.len());
                    if written.is_err() {
                        break 'outer;
                    }
                }
                if out.flush().await.is_err() {
                    break;
                }
            }
            // A dead peer's queue is dropped; a reader waiting on it must not wait for ever.
            rx.close();
            while let Ok(frame) = rx.try_recv() {
                count.remove(frame.len());
            }
            let _ = out.shutdown().await;
            let _ = done_tx.send(());
        });
        Writer { frames, backlog, done }
    }

    /// A writer on a blocking stream (our stdout), served by its own thread.
    pub(crate) fn spawn_blocking<W: Write + Send + 'static>(stream: W) -> Writer {
        let (frames, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("lsp-writer".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(stream);
                'outer: while let Some(frame) = rx.blocking_recv() {
                    if out.write_all(&frame).is_err() {
                        break;
                    }
                    while let Ok(frame) = rx.try_recv() {
                        if out.write_all(&frame).is_err() {
                            break 'outer;
                        }
                    }
                    if out.flush().is_err() {
                        break;
                    }
                }
                let _ = done_tx.send(());
            })
            .expect("spawning the writer thread");
        Writer { frames, backlog: Arc::default(), done }
    }
}

/// Reads items from an async stream until it ends; the returned handle completes at the end.
pub(crate) fn spawn_async_reader<R, E>(
    stream: R,
    max_message_bytes: usize,
    events: mpsc::UnboundedSender<E>,
    wrap: impl Fn(Incoming) -> E + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    E: Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = FrameReader::new(stream, max_message_bytes);
        loop {
            match reader.next().await {
                Ok(Some(item)) => {
                    if events.send(wrap(item)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "read error; treating the stream as closed");
                    return;
                }
            }
        }
    })
}

/// Reads items from a blocking stream (our stdin) on its own thread; `on_end` is sent at EOF.
/// Before each read it waits for room in `backlog` (the peer its messages mostly go to).
pub(crate) fn spawn_blocking_reader<R, E>(
    mut stream: R,
    max_message_bytes: usize,
    backlog: Arc<Backlog>,
    events: mpsc::UnboundedSender<E>,
    wrap: impl Fn(Incoming) -> E + Send + 'static,
    on_end: E,
) where
    R: Read + Send + 'static,
    E: Send + 'static,
{
    std::thread::Builder::new()
        .name("lsp-reader".into())
        .spawn(move || {
            let mut decoder = Decoder::new(max_message_bytes);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                backlog.wait_for_room();
                let n = match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        tracing::warn!(%error, "read error; treating the stream as closed");
                        break;
                    }
                };
                decoder.extend(&chunk[..n]);
                while let Some(item) = decoder.decode() {
                    if events.send(wrap(item)).is_err() {
                        return;
                    }
                }
            }
            if let Some(item) = decoder.finish() {
                let _ = events.send(wrap(item));
            }
            let _ = events.send(on_end);
        })
        .expect("spawning the reader thread");
}
