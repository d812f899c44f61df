// node --test: the pure settings → command line logic.
const test = require("node:test");
const assert = require("node:assert");
const { launch, documentSelector, feedbackArguments, configChanges, statusText } = require("../out/settings.js");

const base = {
  path: "marunochi", model: "", mode: "lsp", serverCommand: [], languages: [], completionDeadlineMs: null, nightWindow: "",
};

test("lsp mode starts the companion server, with the model when set", () => {
  assert.deepStrictEqual(launch(base), { command: "marunochi", args: ["lsp"] });
  assert.deepStrictEqual(launch({ ...base, model: " /m/q.gguf " }), { command: "marunochi", args: ["lsp", "--model", "/m/q.gguf"] });
});

test("proxy mode wraps the server command, and needs one", () => {
  const target = launch({ ...base, mode: "proxy", serverCommand: ["pyright-langserver", "--stdio"] });
  assert.deepStrictEqual(target, { command: "marunochi", args: ["proxy", "--", "pyright-langserver", "--stdio"] });
  assert.match(launch({ ...base, mode: "proxy" }).error, /serverCommand is empty/);
  assert.match(launch({ ...base, mode: "bogus" }).error, /must be "lsp" or "proxy"/);
});

test("documents: every file, or the listed languages", () => {
  assert.deepStrictEqual(documentSelector(base), [{ scheme: "file" }]);
  assert.deepStrictEqual(documentSelector({ ...base, languages: ["python", "rust"] }), [
    { scheme: "file", language: "python" },
    { scheme: "file", language: "rust" },
  ]);
});

test("feedback arguments: the rating, and a comment only when there is one", () => {
  assert.deepStrictEqual(feedbackArguments(1), [1]);
  assert.deepStrictEqual(feedbackArguments(-1, "  "), [-1]);
  assert.deepStrictEqual(feedbackArguments(-1, " wrong API "), [-1, "wrong API"]);
});

test("config changes: only the settings the user set", () => {
  assert.deepStrictEqual(configChanges(base), []);
  assert.deepStrictEqual(configChanges({ ...base, completionDeadlineMs: 99.6, nightWindow: " 22:00-04:00 " }), [
    ["config", "set", "serving.completion_deadline_ms", "100"],
    ["config", "set", "schedule.window", "22:00-04:00"],
  ]);
});

test("status text: model, adapter of the language, acceptance; without decisions no rate", () => {
  const status = { model: "smollm2.gguf", adapters: { go: { active: null, canary: "v1", shadow: null } }, today: {} };
  assert.deepStrictEqual(statusText(status, "go").text, "$(sparkle) smollm2");
  assert.match(statusText(status, "go").tooltip, /go: base model \(canary v1\)\nToday: 0 shown/);
  assert.deepStrictEqual(statusText({ model: null }).text, "$(sparkle) marunochi");
});
