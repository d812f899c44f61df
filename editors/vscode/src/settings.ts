// What the extension starts, from its settings. No `vscode` import: unit-tested under plain node.

export interface Settings {
  path: string;
  model: string;
  mode: string;
  serverCommand: string[];
  languages: string[];
}

export interface Launch {
  command: string;
  args: string[];
}

/** The marunochi command line for these settings, or why there is none. */
export function launch(s: Settings): Launch | { error: string } {
  const command = s.path.trim() || "marunochi";
  const model = s.model.trim() ? ["--model", s.model.trim()] : [];
  if (s.mode === "proxy") {
    if (s.serverCommand.length === 0) {
      return { error: "marunochi.mode is \"proxy\" but marunochi.serverCommand is empty: set the language server command, e.g. [\"pylsp\"]" };
    }
    return { command, args: ["proxy", ...model, "--", ...s.serverCommand] };
  }
  if (s.mode !== "lsp") {
    return { error: `marunochi.mode must be "lsp" or "proxy", not ${JSON.stringify(s.mode)}` };
  }
  return { command, args: ["lsp", ...model] };
}

/** The documents the client serves: the listed languages, or every file. */
export function documentSelector(s: Settings): { scheme: string; language?: string }[] {
  return s.languages.length === 0 ? [{ scheme: "file" }] : s.languages.map((language) => ({ scheme: "file", language }));
}

/** `marunochi.feedback`'s arguments: rating, then the comment when there is one. */
export function feedbackArguments(rating: 1 | -1, comment?: string): unknown[] {
  const text = comment?.trim();
  return text ? [rating, text] : [rating];
}

export const FEEDBACK_COMMAND = "marunochi.feedback";
