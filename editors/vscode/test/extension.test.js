// node --test: the extension's wiring against a stand-in `vscode` (no real VS Code UI runs here).
const test = require("node:test");
const assert = require("node:assert");
const { activateWith } = require("../out/extension.js");

function fakeVscode(settings, answers = {}) {
  const calls = { commands: {}, messages: [], terminals: [] };
  const vs = {
    StatusBarAlignment: { Right: 2 },
    workspace: { getConfiguration: () => ({ get: (key, fallback) => (key in settings ? settings[key] : fallback) }) },
    window: {
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

function fakeClient(log, fail) {
  return (launch, selector) => {
    log.push({ launch, selector });
    return {
      start: async () => { if (fail) throw new Error(fail); },
      stop: async () => log.push("stopped"),
      sendRequest: async (method, params) => { log.push({ method, params }); return null; },
    };
  };
}

test("starts marunochi lsp, and feedback goes to the server as marunochi.feedback", async () => {
  const { vs, calls } = fakeVscode({ model: "/m.gguf" }, { comment: "wrong API" });
  const log = [];
  const running = await activateWith(vs, { subscriptions: [] }, fakeClient(log));
  assert.deepStrictEqual(log[0].launch, { command: "marunochi", args: ["lsp", "--model", "/m.gguf"] });
  assert.match(running.status.text, /sparkle/);
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
  await activateWith(vs, { subscriptions: [] }, fakeClient(log));
  await calls.commands["marunochi.menu"]();
  assert.deepStrictEqual(calls.terminals[0].sent, ['"/opt/marunochi" stats']);
  await calls.commands["marunochi.restart"]();
  assert.strictEqual(log[1], "stopped");
  assert.strictEqual(log.length, 3, "started again");
});

test("a bad setting or a server that does not start is shown, not thrown", async () => {
  const { vs, calls } = fakeVscode({ mode: "proxy" });
  const running = await activateWith(vs, { subscriptions: [] }, fakeClient([]));
  assert.match(calls.messages[0][1], /serverCommand is empty/);
  assert.match(running.status.text, /warning/);

  const broken = fakeVscode({});
  const result = await activateWith(broken.vs, { subscriptions: [] }, fakeClient([], "spawn marunochi ENOENT"));
  assert.match(broken.calls.messages[0][1], /did not start: Error: spawn marunochi ENOENT/);
  assert.strictEqual(result.client, undefined);
  await broken.calls.commands["marunochi.good"]();
  assert.match(broken.calls.messages[1][1], /not running/);
});
