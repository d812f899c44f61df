//! A scripted editor for the demo: speaks LSP to `marunochi proxy` over its stdin/stdout, answers
//! the server's requests like a cooperative editor, and waits for responses with a timeout.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lsp::codec::{self, Incoming};
use crate::lsp::message::Payload;

pub struct Editor {
    child: Child,
    stdin: ChildStdin,
    incoming: mpsc::Receiver<Incoming>,
    next_id: i64,
}

impl Drop for Editor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Editor {
    pub fn spawn(mut command: Command) -> std::io::Result<Editor> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let (tx, incoming) = mpsc::channel();
        codec::spawn_reader(child.stdout.take().expect("piped"), tx);
        Ok(Editor { child, stdin, incoming, next_id: 1 })
    }

    fn send(&mut self, message: &Value) {
        let _ = self.stdin.write_all(&codec::encode(message));
        let _ = self.stdin.flush();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and waits for its answer (answering the server's own requests meanwhile).
    pub fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let item = self.incoming.recv_timeout(left).map_err(|_| format!("no answer to {method} in {timeout:?}"))?;
            let Incoming::Message(Payload::One(raw)) = item else { continue };
            let Ok(message) = raw.to_value() else { continue };
            match (message.get("id"), message.get("method")) {
                (Some(got), None) if got == &json!(id) => {
                    return match message.get("error") {
                        Some(error) => Err(format!("{method} failed: {error}")),
                        None => Ok(message["result"].clone()),
                    };
                }
                (Some(server_id), Some(server_method)) => {
                    let result = match server_method.as_str() {
                        Some("workspace/configuration") => {
                            let n = message["params"]["items"].as_array().map_or(0, Vec::len);
                            Value::Array(vec![Value::Null; n])
                        }
                        _ => Value::Null,
                    };
                    let answer = json!({"jsonrpc": "2.0", "id": server_id.clone(), "result": result});
                    self.send(&answer);
                }
                _ => {}
            }
        }
    }

    /// `shutdown` + `exit`, then waits for the process (the proxy settles its records on the way out).
    pub fn close(mut self) -> Result<(), String> {
        self.request("shutdown", Value::Null, Duration::from_secs(20))?;
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the proxy did not exit".into())
    }
}
