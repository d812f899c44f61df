-- The Neovim plugin (editors/nvim) as a user sets it up, in a real headless Neovim 0.12 or 0.11:
-- `require("marunochi").setup{}` and a server enabled with vim.lsp.config/vim.lsp.enable; the
-- server must start behind `marunochi proxy`; typing must bring a suggestion that the user takes
-- (0.12: inline ghost text and the accept key; 0.11: the marunochi item of the completion menu);
-- the cursor resting on a line must have the prompt there computed (`marunochi.status`'s
-- `warmed`); :MarunochiGood must reach the proxy, :MarunochiStats must show `marunochi stats`,
-- :MarunochiStatus the model and today's suggestion, `:checkhealth marunochi` the executable and
-- the doctor's checks.
--
-- Run with -S (see inline_completion.lua for why). Environment:
--   MARUNOCHI_PLUGIN_DIR  editors/nvim        MARUNOCHI_BIN    the marunochi executable
--   MARUNOCHI_MODEL       the model           MARUNOCHI_PYLSP  the pylsp executable
--   MARUNOCHI_NVIM_FILE   a Python file whose last line is `    return fib`
-- stdout gets one line: `PASS <what was checked>` or `FAIL <reason>`; exit code 0 / 1.

local api = vim.api
local finished, step = false, "startup"

local function finish(ok, msg)
  if finished then
    return
  end
  finished = true
  io.stdout:write((ok and "PASS " or "FAIL ") .. msg:gsub("[\r\n]+", " ") .. "\n")
  io.stdout:flush()
  vim.schedule(function()
    vim.cmd(ok and "cquit 0" or "cquit 1")
  end)
end

local function fail(fmt, ...)
  error({ fail = string.format(fmt, ...) }, 0)
end

local driver
local function resume()
  if finished then
    return
  end
  local ok, err = coroutine.resume(driver)
  if not ok then
    finish(false, type(err) == "table" and err.fail or ("error in test script: " .. debug.traceback(driver, tostring(err))))
  end
end

local function sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

local function wait_for(what, pred)
  step = what
  while true do
    local v = pred()
    if v then
      return v
    end
    sleep(20)
  end
end

local function env(name)
  local v = os.getenv(name)
  if not v or v == "" then
    fail("%s is not set", name)
  end
  return v
end

local function main()
  vim.o.swapfile = false
  vim.opt.runtimepath:prepend(env("MARUNOCHI_PLUGIN_DIR"))
  local marunochi = require("marunochi")
  marunochi.setup({ cmd = env("MARUNOCHI_BIN"), model = env("MARUNOCHI_MODEL") })

  local file = env("MARUNOCHI_NVIM_FILE")
  vim.lsp.config("pylsp", { cmd = { env("MARUNOCHI_PYLSP") }, filetypes = { "python" }, root_markers = { "fib.py" } })
  vim.lsp.enable("pylsp")
  vim.cmd.edit(vim.fn.fnameescape(file))
  local buf = api.nvim_get_current_buf()
  vim.bo[buf].autoindent = false
  vim.bo[buf].indentexpr = ""

  local client = wait_for("the pylsp client to attach", function()
    local c = vim.lsp.get_clients({ bufnr = buf, name = "pylsp" })[1]
    return c and c.initialized and c
  end)
  if client.config.cmd[1] ~= env("MARUNOCHI_BIN") or client.config.cmd[2] ~= "proxy" then
    fail("pylsp was not started behind the proxy: cmd %s", vim.inspect(client.config.cmd))
  end
  if #marunochi.clients(buf) ~= 1 then
    fail("the plugin does not see the proxy's commands")
  end

  -- Where the cursor rests (line 2, `    if n < 2:`), the plugin tells the proxy, which has the
  -- prompt there computed before anything is typed.
  api.nvim_win_set_cursor(0, { 2, 5 })
  wait_for("the prompt computed where the cursor rests", function()
    local status = client:request_sync("workspace/executeCommand", { command = "marunochi.status", arguments = {} }, 5000, buf)
    return status and status.result and (status.result.warmed or 0) >= 1
  end)

  local row = api.nvim_buf_line_count(buf)
  local before = api.nvim_buf_get_lines(buf, row - 1, row, true)[1]
  api.nvim_win_set_cursor(0, { row, #before })
  api.nvim_feedkeys("A", "nt", false)
  wait_for("insert mode", function()
    return api.nvim_get_mode().mode == "i"
  end)
  api.nvim_feedkeys("o", "nt", true)
  local how, want
  if vim.lsp.inline_completion then
    local ns = api.nvim_create_namespace("nvim.lsp.inline_completion")
    wait_for("the inline suggestion", function()
      return #api.nvim_buf_get_extmarks(buf, ns, 0, -1, {}) > 0
    end)
    api.nvim_feedkeys(vim.keycode(marunochi.options.accept_key), "mt", false)
    how = "inline suggestion taken with " .. marunochi.options.accept_key
  else
    sleep(300)
    step = "the completion menu"
    vim.lsp.completion.get()
    local index = wait_for("the marunochi item in the completion menu", function()
      for i, item in ipairs(vim.fn.complete_info({ "items" }).items or {}) do
        local lsp = vim.tbl_get(item, "user_data", "nvim", "lsp", "completion_item")
        if lsp and vim.tbl_get(lsp, "labelDetails", "description") == "marunochi" then
          want = vim.tbl_get(lsp, "textEdit", "newText")
          return i
        end
      end
    end)
    api.nvim_feedkeys(string.rep(vim.keycode("<C-n>"), index) .. vim.keycode("<C-y>"), "nt", false)
    how = "completion-menu item " .. index .. " taken"
  end
  -- The menu inserts the item's first word; completing it applies the whole text edit.
  local taken = wait_for("the whole suggestion in the buffer", function()
    local line = api.nvim_buf_get_lines(buf, row - 1, row, true)[1]
    local whole = want == nil or vim.endswith(line, want)
    return #line > #before + 1 and whole and line
  end)
  api.nvim_feedkeys(vim.keycode("<Esc>"), "nt", false)
  wait_for("normal mode", function()
    return api.nvim_get_mode().mode == "n"
  end)

  step = ":MarunochiGood"
  vim.cmd("MarunochiGood spot on")
  step = ":MarunochiStats"
  vim.cmd("MarunochiStats")
  local stats = api.nvim_get_current_buf()
  local lines = api.nvim_buf_get_lines(stats, 0, -1, false)
  if api.nvim_buf_get_name(stats) ~= "marunochi://stats" or #lines == 0 then
    fail("MarunochiStats showed %s", vim.inspect(lines))
  end
  vim.cmd("close")

  step = ":MarunochiStatus"
  vim.cmd.buffer(buf)
  local status = marunochi.status() or {}
  local said = table.concat(status, "\n")
  if
    not said:find("model smollm2", 1, true)
    or not said:find("python today: 1 shown", 1, true)
    or not said:find("suggestions made ahead of a keystroke: %d")
  then
    fail("MarunochiStatus said %q", said)
  end

  step = ":checkhealth marunochi"
  vim.cmd("checkhealth marunochi")
  local report = api.nvim_buf_get_lines(0, 0, -1, false)
  local joined = table.concat(report, "\n")
  local entries = #vim.tbl_filter(function(line)
    return line:match("^%s*%- ") ~= nil
  end, report)
  if not joined:find("OK marunochi %d") or not joined:find("model", 1, true) or entries < 8 then
    fail("checkhealth said %q", joined)
  end
  finish(true, ("nvim %s: pylsp behind the proxy, %s (%q), feedback sent, stats shown (%d lines), status (%d lines), checkhealth (%d entries)"):format(
    tostring(vim.version()), how, taken, #lines, #status, entries))
end

vim.defer_fn(function()
  finish(false, "timed out while waiting for " .. step)
end, tonumber(os.getenv("MARUNOCHI_NVIM_TIMEOUT_MS") or "") or 90000)
driver = coroutine.create(main)
vim.schedule(resume)
