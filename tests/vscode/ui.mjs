// VS Code for real: code-server (VS Code in the browser, from npm) with the packaged marunochi.vsix
// installed, driven by playwright-core through Debian's Chromium. A Python workspace with pylsp
// behind the proxy: open a file, type, wait for the ghost text, take it with Tab, check the status
// bar (model, today's acceptance) and run `marunochi.good`. The store is checked by the caller
// (tests/it/vscode.rs). Screenshots go to $MARUNOCHI_ARTIFACTS.
//
// Environment: MARUNOCHI_VSCODE_UI (where code-server and playwright-core are installed),
// MARUNOCHI_CODE_SERVER (its executable), MARUNOCHI_VSCODE_PORT, MARUNOCHI_VSCODE_FOLDER
// (the workspace, holding fib.py), MARUNOCHI_VSCODE_DATA (user data and extensions), MARUNOCHI_CHROMIUM.
// Node 24 runs this and code-server (the caller puts it first on PATH). stdout gets one line: `PASS <what was checked>` or `FAIL <reason>`; exit code 0 / 1.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
// playwright-core lives with code-server in .test-deps/vscode-ui, not beside this file.
const { chromium } = createRequire(path.join(env("MARUNOCHI_VSCODE_UI"), "package.json"))("playwright-core");
const port = env("MARUNOCHI_VSCODE_PORT");
const folder = env("MARUNOCHI_VSCODE_FOLDER");
const data = env("MARUNOCHI_VSCODE_DATA");
const artifacts = env("MARUNOCHI_ARTIFACTS");
const server = spawn(
  env("MARUNOCHI_CODE_SERVER"),
  [
    "--auth", "none", "--bind-addr", `127.0.0.1:${port}`,
    "--user-data-dir", path.join(data, "user"), "--extensions-dir", path.join(data, "extensions"),
    "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
    "--disable-getting-started-override", "--ignore-last-opened", folder,
  ],
  // Its log goes to stderr: stdout is for the verdict line.
  { stdio: ["ignore", 2, 2] },
);

let browser;
const finish = async (ok, message, page) => {
  if (page) await page.screenshot({ path: path.join(artifacts, ok ? "vscode.png" : "vscode-failed.png") }).catch(() => {});
  console.log(`${ok ? "PASS" : "FAIL"} ${message.replace(/\n/g, " ")}`);
  await browser?.close().catch(() => {});
  server.kill();
  process.exit(ok ? 0 : 1);
};

let page;
try {
  browser = await chromium.launch({ executablePath: env("MARUNOCHI_CHROMIUM"), args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(folder)}`;
  for (let tries = 0; ; tries++) {
    try {
      await page.goto(url, { timeout: 10_000 });
      break;
    } catch (error) {
      if (tries > 30) throw error;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  await page.waitForSelector(".monaco-workbench", { timeout: 60_000 });
  const open = async (name) => {
    await page.keyboard.press("Control+p");
    await page.keyboard.type(name);
    await page.locator(".quick-input-list .monaco-list-row", { hasText: name }).first().waitFor({ timeout: 30_000 });
    await page.keyboard.press("Enter");
  };
  // Open fib.py through Quick Open, as a user would.
  await open("fib.py");
  const editor = page.locator(".monaco-editor .view-lines").first();
  await editor.waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => document.querySelector(".monaco-editor .view-lines")?.textContent.includes("fibonacci"), null, { timeout: 30_000 });
  // The language client has started (and registered its inline completions) when the status bar
  // item's spinner gives way to the sparkle.
  await page.locator(".statusbar-item .codicon-sparkle").first().waitFor({ timeout: 120_000 });
  // After `return` and a space no completion menu opens: Tab is the ghost text's.
  await editor.click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type(" ");
  const ghost = page.locator(".ghost-text-decoration, .ghost-text").first();
  // A suggestion that comes back empty shows nothing: type the space again, as a user would.
  for (let attempt = 1; ; attempt++) {
    try {
      await ghost.waitFor({ timeout: 30_000 });
      break;
    } catch (error) {
      if (attempt === 3) throw error;
      await page.keyboard.press("Backspace");
      await page.keyboard.type(" ");
    }
  }
  const shown = (await page.locator(".ghost-text-decoration, .ghost-text").allTextContents()).join("");
  await page.screenshot({ path: path.join(artifacts, "vscode-ghost-text.png") });
  await page.keyboard.press("Tab");
  await ghost.waitFor({ state: "detached", timeout: 10_000 });
  await page.keyboard.press("Control+s");
  // The cursor leaves the code (its correction window closes); another editor refreshes the status.
  await page.keyboard.press("Control+Home");
  await page.waitForTimeout(1000);
  await open("other.py");
  const today = page.locator(".statusbar-item", { hasText: "today" }).first();
  await today.waitFor({ timeout: 60_000 });
  const statusText = ((await today.textContent()) ?? "").trim();
  await page.keyboard.press("Control+Shift+p");
  await page.keyboard.type("marunochi: Good suggestion");
  await page.locator(".quick-input-list .monaco-list-row", { hasText: "Good suggestion" }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press("Enter");
  await page.waitForTimeout(2000);
  await finish(true, `ghost text ${JSON.stringify(shown)} taken with Tab; status bar ${JSON.stringify(statusText)}`, page);
} catch (error) {
  await finish(false, String(error?.stack ?? error), page);
}
