// node --test: the extension's wiring against a stand-in `vscode` (no real VS Code UI runs here).
const test = require("node:test");
const assert = require("node:assert");
const { activateWith } = require("../out/extension.js");

function fakeVscode(settings, answers = {}) {
  const calls = { commands: {}, messages: [], terminals: [], listeners: {} };
  const vs = {
    StatusBarAlignment: { Right: 2 },
    workspace: {
      getConfiguration: () => ({ get: (key, fallback) => (key in settings ? settings[key] : fallback) }),
      onDidChangeConfiguration: (f) => { calls.listeners.configuration = f; return { dispose() {} }; },
    },
    window: {
      activeTextEditor: answers.language ? { document: { languageId: answers.language } } : undefined,
      onDidChangeActiveTextEditor: (f) => { calls.listeners.editor = f; return { dispose() {} }; },
      onDidChangeTextEditorSelection: (f) => { calls.listeners.selection = f; return { dispose() {} }; },
      createStatusBarItem: () => ({ text: "", tooltip: "", command: "", show() { this.shown = true; } }),
      showErrorMessage: (m) => calls.messages.push(["error", m]),
      showWarningMessage: (m) => calls.messages.push(["warning", m]),
      showInformationMessage: (m) => calls.messages.push(["info", m]),
      showInputBox: async () => answers.comment,
      showQuickPick: async () => answers.pick,
      createTerminal: (name) => {
        const t = { name, sent: [], show() {}, sendText(x) { this.sent.push(x); } };
        calls.terminals.push(t);
        return t;
      },
    },
    commands: {
      registerCommand: (name, f) => { calls.commands[name] = f; return { dispose() {} }; },
      executeCommand: (name) => calls.commands[name](),
    },
  };
  return { vs, calls };
}

const STATUS = {
  model: "qwen2.5-coder-1.5b-q8_0.gguf",
  problem: null,
  adapters: { python: { active: "v3", canary: "v4", shadow: null }, rust: { active: "v1", canary: null, shadow: null } },
  today: { python: { shown: 12, decided: 10, taken: 6 }, rust: { shown: 2, decided: 2, taken: 2 } },
};

/** A language client; `marunochi.status` answers `status` (not logged), other requests are logged. */
function fakeClient(log, fail, status = STATUS) {
  return (launch, selector) => {
    log.push({ launch, selector });
    return {
      start: async () => { if (fail) throw new Error(fail); },
      stop: async () => log.push("stopped"),
      sendRequest: async (method, params) => {
        if (params.command === "marunochi.status") return status;
        log.push({ method, params });
        return null;
      },
      sendNotification: async (method, params) => { log.push({ notification: method, params }); },
    };
  };
}

/** A process runner that records what it ran and fails where asked. */
function fakeRunner(ran, failures = {}) {
  return async (command, args) => {
    ran.push([command, ...args]);
    const failure = failures[args[2]];
    return failure ? { code: 2, stderr: failure } : { code: 0, stderr: "" };
  };
}

test("starts marunochi lsp, and feedback goes to the server as marunochi.feedback", async () => {
  const { vs, calls } = fakeVscode({ model: "/m.gguf" }, { comment: "wrong API" });
  const log = [];
  const running = await activateWith(vs, { subscriptions: [] }, fakeClient(log), fakeRunner([]));
  assert.deepStrictEqual(log[0].launch, { command: "marunochi", args: ["lsp", "--model", "/m.gguf"] });
  assert.match(running.status.text, /sparkle/);
  assert.strictEqual(running.status.text, "$(sparkle) qwen2.5-coder-1.5b-q8_0 · 67% today");
  await calls.commands["marunochi.good"]();
  await calls.commands["marunochi.bad"]();
  assert.deepStrictEqual(log.slice(1), [
    { method: "workspace/executeCommand", params: { command: "marunochi.feedback", arguments: [1] } },
    { method: "workspace/executeCommand", params: { command: "marunochi.feedback", arguments: [-1, "wrong API"] } },
  ]);
});

test("the status-bar menu opens the stats in a terminal and restarts", async () => {
  const { vs, calls } = fakeVscode({ path: "/opt/marunochi" }, { pick: "$(graph) Stats" });
  const log = [];
  await activateWith(vs, { subscriptions: [] }, fakeClient(log), fakeRunner([]));
  await calls.commands["marunochi.menu"]();
  assert.deepStrictEqual(calls.terminals[0].sent, ['"/opt/marunochi" stats']);
  await calls.commands["marunochi.restart"]();
  assert.strictEqual(log[1], "stopped");
  assert.strictEqual(log.length, 3, "started again");
});

test("a bad setting or a server that does not start is shown, not thrown", async () => {
  const { vs, calls } = fakeVscode({ mode: "proxy" });
  const running = await activateWith(vs, { subscriptions: [] }, fakeClient([]), fakeRunner([]));
  assert.match(calls.messages[0][1], /serverCommand is empty/);
  assert.match(running.status.text, /warning/);

  const broken = fakeVscode({});
  const result = await activateWith(broken.vs, { subscriptions: [] }, fakeClient([], "spawn marunochi ENOENT"), fakeRunner([]));
  assert.match(broken.calls.messages[0][1], /did not start: Error: spawn marunochi ENOENT/);
  assert.strictEqual(result.client, undefined);
  await broken.calls.commands["marunochi.good"]();
  assert.match(broken.calls.messages[1][1], /not running/);
});

test("the status bar shows the model, the current language's adapter and today's acceptance", async () => {
  const { vs, calls } = fakeVscode({}, { language: "python" });
  const running = await activateWith(vs, { subscriptions: [] }, fakeClient([]), fakeRunner([]));
  assert.strictEqual(running.status.text, "$(sparkle) qwen2.5-coder-1.5b-q8_0 · python v3 · 67% today");
  assert.match(running.status.tooltip, /python: v3 \(canary v4\)/);
  assert.match(running.status.tooltip, /rust: v1/);
  assert.match(running.status.tooltip, /Today: 14 shown, 8 of 12 decided taken \(67%\)/);
  vs.window.activeTextEditor = { document: { languageId: "rust" } };
  await calls.listeners.editor();
  await running.refreshStatus();
  assert.strictEqual(running.status.text, "$(sparkle) qwen2.5-coder-1.5b-q8_0 · rust v1 · 67% today");

  const noModel = fakeVscode({});
  const down = { model: null, problem: "the daemon did not start: no model found", adapters: {}, today: {} };
  const shown = await activateWith(noModel.vs, { subscriptions: [] }, fakeClient([], undefined, down), fakeRunner([]));
  assert.strictEqual(shown.status.text, "$(warning) marunochi");
  assert.match(shown.status.tooltip, /no model found/);
});

test("the deadline and night window go into marunochi's config before it starts; a refused one is shown", async () => {
  const ran = [];
  const log = [];
  const { vs, calls } = fakeVscode({ path: "/opt/marunochi", completionDeadlineMs: 120, nightWindow: "23:00-05:30" });
  await activateWith(vs, { subscriptions: [] }, fakeClient(log), fakeRunner(ran));
  assert.deepStrictEqual(ran, [
    ["/opt/marunochi", "config", "set", "serving.completion_deadline_ms", "120"],
    ["/opt/marunochi", "config", "set", "schedule.window", "23:00-05:30"],
  ]);
  assert.strictEqual(log.length, 1, "then the server started");

  const refused = fakeVscode({ nightWindow: "25:00-05:00" });
  const failures = { "schedule.window": '"25:00-05:00" is not a window such as 01:00-06:00' };
  await activateWith(refused.vs, { subscriptions: [] }, fakeClient([]), fakeRunner([], failures));
  assert.match(refused.calls.messages[0][1], /setting schedule.window failed: "25:00-05:00" is not a window/);

  // Changing a marunochi setting restarts it with the new values.
  const none = [];
  const quiet = fakeVscode({});
  const restarted = [];
  await activateWith(quiet.vs, { subscriptions: [] }, fakeClient(restarted), fakeRunner(none));
  await quiet.calls.listeners.configuration({ affectsConfiguration: (s) => s === "marunochi" });
  assert.deepStrictEqual(none, [], "unset settings leave config.toml alone");
  assert.strictEqual(restarted[1], "stopped");
  assert.strictEqual(restarted.length, 3);
  assert.ok(calls.commands["marunochi.restart"]);
});

test("tells marunochi where the cursor comes to rest in a file, once per single cursor", async () => {
  const { vs, calls } = fakeVscode({});
  const log = [];
  await activateWith(vs, { subscriptions: [] }, fakeClient(log), fakeRunner([]));
  const editor = (scheme) => ({ document: { uri: { scheme, toString: () => `${scheme}:///w/a.py` } } });
  calls.listeners.selection({ textEditor: editor("file"), selections: [{ active: { line: 4, character: 18 } }] });
  calls.listeners.selection({ textEditor: editor("output"), selections: [{ active: { line: 1, character: 0 } }] });
  calls.listeners.selection({ textEditor: editor("file"), selections: [{ active: { line: 1, character: 0 } }, { active: { line: 2, character: 0 } }] });
  assert.deepStrictEqual(log.slice(1), [
    { notification: "marunochi/cursor", params: { textDocument: { uri: "file:///w/a.py" }, position: { line: 4, character: 18 } } },
  ]);
});
