// What the extension starts, from its settings. No `vscode` import: unit-tested under plain node.

export interface Settings {
  path: string;
  model: string;
  mode: string;
  serverCommand: string[];
  languages: string[];
  /** `[serving] completion_deadline_ms`; `null` leaves config.toml as it is. */
  completionDeadlineMs: number | null;
  /** `[schedule] window` (local HH:MM-HH:MM); empty leaves config.toml as it is. */
  nightWindow: string;
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
export const STATUS_COMMAND = "marunochi.status";
/** Where the cursor came to rest: marunochi computes the prompt there before the user types. */
export const CURSOR_NOTIFICATION = "marunochi/cursor";

/**
 * The `marunochi config set` calls that bring config.toml in line with these settings (marunochi
 * checks the values and refuses bad ones; the file is shared with other editors and the daemon).
 */
export function configChanges(s: Settings): string[][] {
  const changes: string[][] = [];
  if (s.completionDeadlineMs !== null && s.completionDeadlineMs !== undefined) {
    changes.push(["config", "set", "serving.completion_deadline_ms", String(Math.round(s.completionDeadlineMs))]);
  }
  if (s.nightWindow.trim()) {
    changes.push(["config", "set", "schedule.window", s.nightWindow.trim()]);
  }
  return changes;
}

/** What `marunochi.status` answers. */
export interface Status {
  model?: string | null;
  problem?: string | null;
  adapters?: Record<string, { active?: string | null; canary?: string | null; shadow?: string | null }>;
  today?: Record<string, { shown: number; decided: number; taken: number }>;
}

/**
 * The status bar for `status` while editing `language`: the model, that language's adapter and
 * today's acceptance; every language in the tooltip.
 */
export function statusText(status: Status, language?: string): { text: string; tooltip: string } {
  const adapters = status.adapters ?? {};
  const today = Object.values(status.today ?? {});
  const decided = today.reduce((n, t) => n + t.decided, 0);
  const taken = today.reduce((n, t) => n + t.taken, 0);
  const shown = today.reduce((n, t) => n + t.shown, 0);
  const rate = decided > 0 ? `${Math.round((100 * taken) / decided)}%` : undefined;
  if (!status.model) {
    const why = status.problem ?? "no suggestion asked for yet";
    return { text: status.problem ? "$(warning) marunochi" : "$(sparkle) marunochi", tooltip: `marunochi: ${why}` };
  }
  const model = status.model.replace(/\.gguf$/, "");
  const here = language ? adapters[language]?.active : undefined;
  const parts = [`$(sparkle) ${model}`];
  if (here) parts.push(`${language} ${here}`);
  if (rate) parts.push(`${rate} today`);
  const lines = [`Model: ${status.model}`];
  for (const [name, stages] of Object.entries(adapters)) {
    const rollout = [stages.canary && `canary ${stages.canary}`, stages.shadow && `shadow ${stages.shadow}`].filter(Boolean);
    lines.push(`${name}: ${stages.active ?? "base model"}${rollout.length ? ` (${rollout.join(", ")})` : ""}`);
  }
  lines.push(rate ? `Today: ${shown} shown, ${taken} of ${decided} decided taken (${rate})` : `Today: ${shown} shown`);
  lines.push("Click for feedback and stats.");
  return { text: parts.join(" · "), tooltip: lines.join("\n") };
}
