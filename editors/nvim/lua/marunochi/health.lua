-- `:checkhealth marunochi`: the executable and its version, then what `marunochi doctor --json`
-- finds (data directory and store, config, model, daemon, adapters per language, training
-- schedule, language servers), then this Neovim: its version and the buffer's marunochi clients.

local M = {}

local health = vim.health

local function report(check)
  local text = check.what .. ": " .. check.detail
  local advice = check.fix and { check.fix } or nil
  if check.status == "ok" then
    health.ok(text)
  elseif check.status == "warn" then
    health.warn(text, advice)
  else
    health.error(text, advice)
  end
end

function M.check()
  local marunochi = require("marunochi")
  local cmd = marunochi.options.cmd
  health.start("marunochi: executable")
  if vim.fn.executable(cmd) == 0 then
    health.error(cmd .. " is not executable", {
      "build it with `cargo build --release` and put target/release/marunochi on PATH",
      'or set `cmd` in require("marunochi").setup{}',
    })
    return
  end
  local version = vim.system({ cmd, "--version" }, { text = true }):wait()
  health.ok(vim.trim(version.stdout or "") .. " (" .. vim.fn.exepath(cmd) .. ")")

  health.start("marunochi: doctor (the model loads and completes once: a few seconds)")
  local doctor = vim.system({ cmd, "doctor", "--json" }, { text = true }):wait()
  local ok, parsed = pcall(vim.json.decode, doctor.stdout or "")
  if not ok or type(parsed) ~= "table" or type(parsed.checks) ~= "table" then
    health.error("`" .. cmd .. " doctor --json` gave no report: " .. vim.trim(doctor.stderr or ""), {
      "run `" .. cmd .. " doctor` in a terminal",
    })
  else
    for _, check in ipairs(parsed.checks) do
      report(check)
    end
  end

  health.start("marunochi: Neovim")
  if vim.lsp.inline_completion then
    health.ok("Neovim 0.12+: suggestions as ghost text, accepted with " .. marunochi.options.accept_key)
  elseif vim.lsp.completion then
    health.ok("Neovim 0.11: suggestions as the marunochi item of the completion menu")
  else
    health.error("Neovim 0.11 or newer is needed")
  end
  local clients = marunochi.clients(0)
  if #clients > 0 then
    health.ok("this buffer has " .. #clients .. " marunochi client(s): " .. clients[1].name)
  else
    health.info("no marunochi client in this buffer (open a file your language server handles)")
  end
end

return M
