// node --test: the pure settings → command line logic.
const test = require("node:test");
const assert = require("node:assert");
const { launch, documentSelector, feedbackArguments } = require("../out/settings.js");

const base = { path: "marunochi", model: "", mode: "lsp", serverCommand: [], languages: [] };

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
