// marunochi for VS Code: starts `marunochi lsp` (or the proxy in front of a server) through
// vscode-languageclient, which shows its inline completions and registers the commands the server
// advertises (`marunochi.accept`, run by VS Code when a suggestion is taken). Adds thumbs up/down
// feedback (keys and a status-bar menu), a status bar with the model, the adapter serving the current
// language and today's acceptance (`marunochi.status`, refreshed every 30 s and on editor change),
// and writes the deadline and night-window settings into marunochi's config (`marunochi config
// set`). Tells marunochi where the cursor comes to rest (`marunochi/cursor`), so the prompt there
// is computed before the user types. `vscode`, the language client and the process runner are passed in, so the wiring is
// tested under node with stand-ins.

import type * as vscode from "vscode";
import {
  CURSOR_NOTIFICATION,
  FEEDBACK_COMMAND,
  STATUS_COMMAND,
  Settings,
  Status,
  configChanges,
  documentSelector,
  feedbackArguments,
  launch,
  statusText,
} from "./settings";

/** The part of a LanguageClient this extension uses. */
export interface Client {
  start(): Promise<void>;
  stop(): Promise<void>;
  sendRequest(method: string, params: unknown): Promise<unknown>;
  sendNotification(method: string, params: unknown): Promise<void>;
}

export type ClientFactory = (
  launch: { command: string; args: string[] },
  selector: { scheme: string; language?: string }[],
) => Client;

/** Runs `command args` to completion: exit code and stderr. */
export type Runner = (command: string, args: string[]) => Promise<{ code: number; stderr: string }>;

type Vscode = typeof vscode;

const STATUS_EVERY_MS = 30_000;

export interface Running {
  client?: Client;
  status: vscode.StatusBarItem;
  refreshStatus?: () => Promise<void>;
}

export function readSettings(vs: Vscode): Settings {
  const c = vs.workspace.getConfiguration("marunochi");
  return {
    path: c.get<string>("path", "marunochi"),
    model: c.get<string>("model", ""),
    mode: c.get<string>("mode", "lsp"),
    serverCommand: c.get<string[]>("serverCommand", []),
    languages: c.get<string[]>("languages", []),
    completionDeadlineMs: c.get<number | null>("completionDeadlineMs", null),
    nightWindow: c.get<string>("nightWindow", ""),
  };
}

export async function activateWith(
  vs: Vscode,
  context: vscode.ExtensionContext,
  makeClient: ClientFactory,
  run: Runner,
): Promise<Running> {
  const status = vs.window.createStatusBarItem(vs.StatusBarAlignment.Right, 100);
  status.command = "marunochi.menu";
  const running: Running = { status };
  context.subscriptions.push(status);

  const refreshStatus = async () => {
    if (!running.client) return;
    try {
      const answer = (await running.client.sendRequest("workspace/executeCommand", {
        command: STATUS_COMMAND,
        arguments: [],
      })) as Status | null;
      if (!answer) return;
      const shown = statusText(answer, vs.window.activeTextEditor?.document.languageId);
      status.text = shown.text;
      status.tooltip = shown.tooltip;
    } catch {
      // An older marunochi without the command, or one restarting: keep what is shown.
    }
  };

  const start = async () => {
    const settings = readSettings(vs);
    const target = launch(settings);
    if ("error" in target) {
      status.text = "$(warning) marunochi";
      status.tooltip = target.error;
      status.show();
      void vs.window.showErrorMessage(`marunochi: ${target.error}`);
      return;
    }
    for (const args of configChanges(settings)) {
      const result = await run(target.command, args).catch((error) => ({ code: -1, stderr: String(error) }));
      if (result.code !== 0) {
        void vs.window.showErrorMessage(`marunochi: setting ${args[2]} failed: ${result.stderr.trim()}`);
      }
    }
    status.text = "$(sync~spin) marunochi";
    status.tooltip = `Starting ${target.command} ${target.args.join(" ")}`;
    status.show();
    const client = makeClient(target, documentSelector(settings));
    try {
      await client.start();
      running.client = client;
      status.text = "$(sparkle) marunochi";
      status.tooltip = `marunochi ${settings.model ? `(${settings.model})` : ""}: suggestions on. Click for feedback and stats.`;
      await refreshStatus();
    } catch (error) {
      status.text = "$(error) marunochi";
      status.tooltip = String(error);
      void vs.window.showErrorMessage(`marunochi did not start: ${error}. Run \`marunochi doctor\` in a terminal.`);
    }
  };

  const feedback = async (rating: 1 | -1) => {
    if (!running.client) {
      void vs.window.showWarningMessage("marunochi is not running");
      return;
    }
    const comment = rating === -1 ? await vs.window.showInputBox({ prompt: "What was wrong? (optional)" }) : undefined;
    await running.client.sendRequest("workspace/executeCommand", {
      command: FEEDBACK_COMMAND,
      arguments: feedbackArguments(rating, comment),
    });
    void vs.window.showInformationMessage("marunochi: thanks, noted");
  };

  context.subscriptions.push(
    vs.commands.registerCommand("marunochi.good", () => feedback(1)),
    vs.commands.registerCommand("marunochi.bad", () => feedback(-1)),
    vs.commands.registerCommand("marunochi.restart", async () => {
      await running.client?.stop();
      running.client = undefined;
      await start();
    }),
    vs.commands.registerCommand("marunochi.menu", async () => {
      const choice = await vs.window.showQuickPick(
        ["$(thumbsup) Good suggestion", "$(thumbsdown) Bad suggestion…", "$(graph) Stats", "$(refresh) Restart"],
        { placeHolder: "marunochi" },
      );
      if (choice?.includes("Good")) await feedback(1);
      else if (choice?.includes("Bad")) await feedback(-1);
      else if (choice?.includes("Stats")) {
        const terminal = vs.window.createTerminal("marunochi stats");
        terminal.show();
        terminal.sendText(`${JSON.stringify(readSettings(vs).path)} stats`);
      } else if (choice?.includes("Restart")) await vs.commands.executeCommand("marunochi.restart");
    }),
  );
  const timer = setInterval(() => void refreshStatus(), STATUS_EVERY_MS);
  timer.unref?.();
  context.subscriptions.push({ dispose: () => clearInterval(timer) });
  const editorChanged = vs.window.onDidChangeActiveTextEditor?.(() => void refreshStatus());
  const settingsChanged = vs.workspace.onDidChangeConfiguration?.((event) => {
    if (event.affectsConfiguration("marunochi")) void vs.commands.executeCommand("marunochi.restart");
  });
  // marunochi waits for the cursor to stop moving before it computes anything.
  const cursorMoved = vs.window.onDidChangeTextEditorSelection?.((event) => {
    const at = event.selections.length === 1 ? event.selections[0].active : undefined;
    if (!running.client || !at || event.textEditor.document.uri.scheme !== "file") return;
    void running.client
      .sendNotification(CURSOR_NOTIFICATION, {
        textDocument: { uri: event.textEditor.document.uri.toString() },
        position: { line: at.line, character: at.character },
      })
      .catch(() => undefined);
  });
  for (const subscription of [editorChanged, settingsChanged, cursorMoved]) if (subscription) context.subscriptions.push(subscription);
  running.refreshStatus = refreshStatus;
  await start();
  return running;
}

let current: Running | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  // Loaded here, not at the top: the unit tests run this module without VS Code.
  const vs: Vscode = require("vscode");
  const lc = require("vscode-languageclient/node");
  const { execFile } = require("node:child_process");
  const run: Runner = (command, args) =>
    new Promise((resolve) =>
      execFile(command, args, (error: { code?: number } | null, _stdout: string, stderr: string) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stderr: stderr || String(error ?? "") }),
      ),
    );
  const makeClient: ClientFactory = (target, selector) => {
    // No `transport`: with TransportKind.stdio the client appends `--stdio` to the arguments, which
    // the proxy would hand to the user's language server (pylsp refuses it) and `marunochi lsp`
    // does not take. An executable without one talks over stdio all the same.
    const server = { command: target.command, args: target.args };
    return new lc.LanguageClient("marunochi", "marunochi", server, { documentSelector: selector });
  };
  current = await activateWith(vs, context, makeClient, run);
}

export async function deactivate(): Promise<void> {
  await current?.client?.stop();
}
