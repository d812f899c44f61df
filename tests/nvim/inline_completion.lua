-- End-to-end check of LSP inline completion as a Neovim (>= 0.12) user sees it:
-- type in insert mode, let Neovim itself request `textDocument/inlineCompletion`,
-- accept the shown item with Neovim's own accept API, and confirm the server
-- learned about the acceptance through the item's command.
--
-- Run it with -S, not -l:
--   nvim --headless --clean -u NONE -S tests/nvim/inline_completion.lua
-- `-l` runs the whole script before Neovim's main loop ever starts, so typed keys
-- are never processed as user input (feedkeys with 'x' processes them in one go,
-- firing CursorMovedI only once, and 'x!' leaves the script stuck in insert mode).
-- With -S the script only sets things up; the normal main loop then handles our
-- typed keys, autocommands, timers and LSP I/O exactly as in an interactive session,
-- and a coroutine drives the steps from timer callbacks.
--
-- Environment:
--   MARUNOCHI_NVIM_CMD         JSON array: the language server command
--   MARUNOCHI_NVIM_FILE        file to edit; its directory is the root dir
--   MARUNOCHI_NVIM_LINE        1-based line; typing starts at its end
--   MARUNOCHI_NVIM_TYPE        text typed there in insert mode (a newline presses Enter)
--   MARUNOCHI_NVIM_TIMEOUT_MS  overall limit (default 60000)
--   MARUNOCHI_NVIM_KEY_DELAY_MS pause between typed keys (default 50; Neovim debounces its
--                              requests by 200 ms, so fast typing yields one request at the end)
--   MARUNOCHI_NVIM_AFTER_ACCEPT keys typed right after accepting, in insert mode (key notation,
--                              e.g. "<BS><BS>x": a correction of the accepted code); optional
--
-- Output: progress lines `nvim-test: ...` and the server's stderr (as
-- `nvim-test: lsp-log: ...`) go to stderr; stdout gets exactly one line,
-- `PASS inline completion accepted: <insertText as JSON>` or `FAIL <reason>`.
-- insertText replaces the item's range, so when that range starts before the
-- cursor the text repeats what was typed there, and so does the PASS line.
-- Exit code 0 on PASS, 1 on FAIL.
-- Neovim opens its LSP log under $XDG_STATE_HOME/nvim; point that at a temp dir.

local api, uv = vim.api, vim.uv
local METHOD = 'textDocument/inlineCompletion'
local EXEC = 'workspace/executeCommand'

local function progress(fmt, ...)
  io.stderr:write('nvim-test: ' .. string.format(fmt, ...) .. '\n')
end

local function json(v)
  return vim.json.encode(v)
end

local finished = false
local step = 'startup' -- what we are waiting for; named in timeout/exit failures

local function finish(ok, msg)
  if finished then
    return
  end
  finished = true
  -- Keep the verdict on one line whatever the message contains.
  io.stdout:write((ok and 'PASS ' or 'FAIL ') .. msg:gsub('[\r\n]+', ' ') .. '\n')
  io.stdout:flush()
  -- `cquit N` sets the exit code explicitly; it still runs VimLeavePre, so the
  -- LSP client shuts the server down politely.
  vim.schedule(function()
    vim.cmd(ok and 'cquit 0' or 'cquit 1')
  end)
  -- Last resort if the main loop is wedged and never gets to the scheduled quit.
  local backstop = assert(uv.new_timer())
  backstop:start(10000, 0, function()
    os.exit(ok and 0 or 1)
  end)
  backstop:unref()
end

-- Failures unwind the driver coroutine as a tagged table, so a FAIL reason is
-- never confused with a Lua error (which is reported with its traceback).
local function fail(fmt, ...)
  error({ fail = string.format(fmt, ...) }, 0)
end

---------------------------------------------------------------------------
-- Inputs

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == '' then
    if default == nil then
      fail('%s is not set', name)
    end
    return default
  end
  return v
end

local function read_inputs()
  local ok, cmd = pcall(vim.json.decode, env('MARUNOCHI_NVIM_CMD'))
  if not ok or type(cmd) ~= 'table' or #cmd == 0 then
    fail('MARUNOCHI_NVIM_CMD must be a non-empty JSON array of strings')
  end
  for _, a in ipairs(cmd) do
    if type(a) ~= 'string' then
      fail('MARUNOCHI_NVIM_CMD must be a non-empty JSON array of strings')
    end
  end
  local file = vim.fn.fnamemodify(env('MARUNOCHI_NVIM_FILE'), ':p')
  if not uv.fs_stat(file) then
    fail('MARUNOCHI_NVIM_FILE %s does not exist', file)
  end
  local line = tonumber(env('MARUNOCHI_NVIM_LINE'))
  if not line or line < 1 or line % 1 ~= 0 then
    fail('MARUNOCHI_NVIM_LINE must be a positive integer')
  end
  return {
    cmd = cmd,
    file = file,
    line = line,
    text = env('MARUNOCHI_NVIM_TYPE'),
    key_delay = tonumber(env('MARUNOCHI_NVIM_KEY_DELAY_MS', '50')) or 50,
    after_accept = env('MARUNOCHI_NVIM_AFTER_ACCEPT', ''),
  }
end

---------------------------------------------------------------------------
-- Coroutine helpers: every wait yields back to the main loop, so Neovim keeps
-- processing keys, autocommands and LSP messages while the test waits.

local driver ---@type thread

local function resume(...)
  if finished then
    return
  end
  local ok, err = coroutine.resume(driver, ...)
  if not ok then
    if type(err) == 'table' and err.fail then
      finish(false, err.fail)
    else
      finish(false, 'error in test script: ' .. debug.traceback(driver, tostring(err)))
    end
  elseif coroutine.status(driver) == 'dead' and not finished then
    finish(false, 'test script ended without a verdict')
  end
end

local function sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

local server_exit ---@type string?

--- Polls `pred` until it returns a truthy value (returned), failing early if the
--- server has exited; the global timeout bounds every wait.
local function wait_for(what, pred)
  step = what
  while true do
    local v = pred()
    if v then
      return v
    end
    if server_exit then
      fail('language server exited (%s) while waiting for %s', server_exit, what)
    end
    sleep(10)
  end
end

---------------------------------------------------------------------------
-- Wire tap: record what Neovim really sends and receives, below every handler,
-- so each step is checked against actual LSP traffic rather than editor state.

local wire = { requests = {}, notifications = {}, seq = 0 }

-- Orders messages as sent (timestamps could tie).
local function next_seq()
  wire.seq = wire.seq + 1
  return wire.seq
end

local function tap(client)
  local rpc = client.rpc
  local orig_request, orig_notify = rpc.request, rpc.notify
  rpc.request = function(method, params, callback, notify_reply_callback)
    local rec = { method = method, params = params, seq = next_seq() }
    local ok, id = orig_request(method, params, function(err, result)
      rec.responded, rec.err, rec.result = true, err, result
      return callback(err, result)
    end, notify_reply_callback)
    table.insert(wire.requests, rec)
    return ok, id
  end
  rpc.notify = function(method, params)
    table.insert(wire.notifications, { method = method, params = params, seq = next_seq() })
    return orig_notify(method, params)
  end
end

local function requests(method, pred)
  return vim.tbl_filter(function(r)
    return r.method == method and (pred == nil or pred(r))
  end, wire.requests)
end

local function notifications(method)
  return vim.tbl_filter(function(n)
    return n.method == method
  end, wire.notifications)
end

---------------------------------------------------------------------------
-- Helpers on the buffer

local function utf8_chars(s)
  local out = {}
  for ch in s:gmatch('[%z\1-\127\194-\244][\128-\191]*') do
    table.insert(out, ch)
  end
  return out
end

--- Buffer text from `row` (1-based) to the end, joined with "\n".
local function text_from(buf, row)
  return table.concat(api.nvim_buf_get_lines(buf, row - 1, -1, true), '\n')
end

--- What the buffer should look like after applying `item` as an LSP edit
--- (insertText replaces `range`, or is inserted at the cursor without one).
local function expected_after(lines, item, cursor_pos, encoding)
  local scratch = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(scratch, 0, -1, true, lines)
  local range = item.range or { start = cursor_pos, ['end'] = cursor_pos }
  vim.lsp.util.apply_text_edits({ { range = range, newText = item.insertText } }, scratch, encoding)
  local out = api.nvim_buf_get_lines(scratch, 0, -1, true)
  api.nvim_buf_delete(scratch, { force = true })
  return out
end

---------------------------------------------------------------------------
-- The test

local function main()
  local inputs = read_inputs()
  if not (vim.lsp.inline_completion and vim.lsp.inline_completion.get) then
    fail('this Neovim (%s) has no vim.lsp.inline_completion; need >= 0.12', tostring(vim.version()))
  end
  progress('neovim %s, file %s, line %d, typing %s', tostring(vim.version()), inputs.file, inputs.line,
    json(inputs.text))

  -- Mirror LSP log entries (server stderr is logged as ERROR) to our stderr
  -- instead of a log file nobody reads.
  vim.lsp.log.set_format_func(function(level, ...)
    if vim.log.levels[level] >= vim.log.levels.WARN then
      local parts = {}
      for i = 1, select('#', ...) do
        local a = select(i, ...)
        table.insert(parts, type(a) == 'string' and a or vim.inspect(a, { newline = ' ', indent = '' }))
      end
      local text = table.concat(parts, ' '):gsub('\n+$', '')
      io.stderr:write('nvim-test: lsp-log: ' .. level .. ' ' .. text .. '\n')
    end
    return nil
  end)

  -- Deterministic typing: no indent or formatting rules may rewrite what we type.
  vim.o.showmode = false
  -- A stale swap file from a killed run would block on the ATTENTION prompt.
  vim.o.swapfile = false
  vim.cmd.edit(vim.fn.fnameescape(inputs.file))
  local buf = api.nvim_get_current_buf()
  vim.bo[buf].filetype = vim.filetype.match({ buf = buf }) or ''
  vim.bo[buf].autoindent = false
  vim.bo[buf].indentexpr = ''
  vim.bo[buf].textwidth = 0
  vim.bo[buf].formatoptions = ''
  if inputs.line > api.nvim_buf_line_count(buf) then
    fail('MARUNOCHI_NVIM_LINE %d is past the end of %s (%d lines)', inputs.line, inputs.file,
      api.nvim_buf_line_count(buf))
  end

  if vim.fn.executable(inputs.cmd[1]) ~= 1 then
    fail('language server command %s is not executable', json(inputs.cmd[1]))
  end
  step = 'starting the language server'
  local client_id = vim.lsp.start({
    name = 'server-under-test',
    cmd = inputs.cmd,
    root_dir = vim.fs.dirname(inputs.file),
    on_exit = function(code, signal)
      server_exit = ('code %d, signal %d'):format(code, signal)
      vim.schedule(function()
        if not finished then
          finish(false, ('language server exited (%s) while waiting for %s'):format(server_exit, step))
        end
      end)
    end,
  }, { bufnr = buf })
  if not client_id then
    fail('vim.lsp.start did not start a client for %s', json(inputs.cmd))
  end
  local client = assert(vim.lsp.get_client_by_id(client_id))
  tap(client)

  wait_for('the client to initialize and attach', function()
    return client.initialized and vim.lsp.buf_is_attached(buf, client_id)
  end)
  if #notifications('textDocument/didOpen') == 0 then
    fail('client attached but sent no textDocument/didOpen')
  end
  progress('attached: server %s, offset encoding %s', json(client.server_info or vim.NIL), client.offset_encoding)
  if not client:supports_method(METHOD) then
    fail('server does not advertise inlineCompletionProvider (capabilities: %s)', json(client.server_capabilities))
  end

  vim.lsp.inline_completion.enable(true, { bufnr = buf })
  if not vim.lsp.inline_completion.is_enabled({ bufnr = buf }) then
    fail('vim.lsp.inline_completion.enable did not enable the buffer')
  end

  -- How a user accepts: a <Tab> mapping that falls back to a literal tab when
  -- there is nothing to accept (the example in `:help vim.lsp.inline_completion.get()`).
  local get_result ---@type boolean?
  vim.keymap.set('i', '<Tab>', function()
    get_result = vim.lsp.inline_completion.get()
    if not get_result then
      return '<Tab>'
    end
  end, { expr = true, buffer = buf })

  -- Type like a user: each key goes through the input queue and the main loop,
  -- so Neovim fires InsertEnter/CursorMovedI itself; those are what schedule its
  -- (debounced) inlineCompletion request, and the request flushes didChange first.
  local row = inputs.line
  local original = api.nvim_buf_get_lines(buf, row - 1, row, true)[1]
  api.nvim_win_set_cursor(0, { row, 0 })
  local typing_started = next_seq()
  api.nvim_feedkeys('A', 'nt', false)
  wait_for('insert mode at the end of line ' .. row, function()
    local cur = api.nvim_win_get_cursor(0)
    return api.nvim_get_mode().mode == 'i' and cur[1] == row and cur[2] == #original
  end)
  local typed = ''
  for _, ch in ipairs(utf8_chars(inputs.text)) do
    sleep(inputs.key_delay)
    -- Typed keys must not be remapped; escape_ks keeps multibyte chars intact.
    api.nvim_feedkeys(ch == '\n' and '\r' or ch, 'nt', true)
    typed = typed .. ch
    local want = original .. typed
    wait_for('typed text ' .. json(typed) .. ' to appear', function()
      return api.nvim_get_mode().mode == 'i' and vim.startswith(text_from(buf, row), want)
    end)
  end
  local cursor = api.nvim_win_get_cursor(0)
  local pos = vim.lsp.util.make_position_params(0, client.offset_encoding).position
  progress('typed %s; cursor at line %d col %d (LSP %d:%d)', json(typed), cursor[1], cursor[2], pos.line, pos.character)

  local function at_cursor(r)
    local p = r.params.position
    return r.seq > typing_started and p.line == pos.line and p.character == pos.character
  end
  wait_for('an inlineCompletion request at the cursor', function()
    return #requests(METHOD, at_cursor) > 0
  end)
  wait_for('the inlineCompletion response', function()
    local rs = requests(METHOD, at_cursor)
    return rs[#rs].responded
  end)
  local req = requests(METHOD, at_cursor)[#requests(METHOD, at_cursor)]
  for i, r in ipairs(requests(METHOD)) do
    local n = r.result and #(r.result.items or r.result) or 0
    progress('inlineCompletion #%d at %d:%d triggerKind=%s -> %s', i, r.params.position.line,
      r.params.position.character, tostring(r.params.context and r.params.context.triggerKind),
      r.responded and (r.err and ('error ' .. json(r.err)) or (n .. ' item(s)')) or 'pending')
  end
  local changes_before = vim.tbl_filter(function(n)
    return n.seq < req.seq
  end, notifications('textDocument/didChange'))
  if #changes_before == 0 then
    fail('no textDocument/didChange was sent before the inlineCompletion request')
  end
  if req.err then
    fail('inlineCompletion request failed: %s', json(req.err))
  end
  local items = req.result and (req.result.items or req.result) or {}
  if #items == 0 then
    fail('server returned no inline completion items at %d:%d (result %s)', pos.line, pos.character,
      json(req.result or vim.NIL))
  end
  local item = items[1] -- Neovim shows (and accepts) the first item
  progress('item: %s', json(item))
  if type(item.insertText) ~= 'string' then
    fail('harness only handles plain-string insertText, got %s', json(item.insertText))
  end

  local ns = api.nvim_create_namespace('nvim.lsp.inline_completion')
  local marks = wait_for('the inline completion to be displayed', function()
    local m = api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
    return #m > 0 and m or nil
  end)
  local shown = {}
  for _, chunk in ipairs(marks[1][4].virt_text or {}) do
    table.insert(shown, chunk[1])
  end
  progress('displayed as virtual text %s at %d:%d (+%d virtual lines)', json(table.concat(shown)), marks[1][2],
    marks[1][3], #(marks[1][4].virt_lines or {}))

  -- Accept through the mapping; Neovim applies the edit in a scheduled callback.
  local before = api.nvim_buf_get_lines(buf, 0, -1, true)
  local want_lines = expected_after(before, item, pos, client.offset_encoding)
  local execs_before = #requests(EXEC)
  api.nvim_feedkeys(vim.keycode('<Tab>'), 'mt', false)
  wait_for('<Tab> to accept the completion', function()
    return get_result ~= nil
  end)
  if not get_result then
    fail('vim.lsp.inline_completion.get() had nothing to accept')
  end
  wait_for('the accepted text to be applied', function()
    return not vim.deep_equal(api.nvim_buf_get_lines(buf, 0, -1, true), before)
  end)
  local after = api.nvim_buf_get_lines(buf, 0, -1, true)
  if not vim.deep_equal(after, want_lines) then
    fail('buffer after accept is %s, expected %s', json(after), json(want_lines))
  end
  if not vim.startswith(text_from(buf, row), original .. typed) then
    fail('accepting replaced the typed text: line is now %s', json(after[row]))
  end
  progress('line %d after accept: %s', row, json(after[row]))

  local command = item.command
  if type(command) ~= 'table' or command.command ~= 'marunochi.accept' then
    fail('item has no marunochi.accept command: %s', json(command or vim.NIL))
  end
  local args = command.arguments
  if type(args) ~= 'table' or #args ~= 1 then
    fail('marunochi.accept arguments should be [suggestion_id], got %s', json(args or vim.NIL))
  end
  local suggestion_id = args[1]

  -- Neovim runs the command right after applying the edit, in the same callback,
  -- so by now the request was either sent or never will be.
  local function is_accept(r)
    return r.params.command == 'marunochi.accept' and vim.deep_equal(r.params.arguments, args)
  end
  local accepts = vim.list_slice(requests(EXEC), execs_before + 1)
  accepts = vim.tbl_filter(is_accept, accepts)
  if #accepts == 0 then
    local provider = client.server_capabilities.executeCommandProvider
    fail('Neovim did not send workspace/executeCommand marunochi.accept (server executeCommandProvider: %s)',
      json(provider or vim.NIL))
  end
  wait_for('the marunochi.accept response', function()
    return accepts[1].responded
  end)
  if accepts[1].err then
    fail('workspace/executeCommand marunochi.accept failed: %s', json(accepts[1].err))
  end
  progress('workspace/executeCommand marunochi.accept %s answered %s', json(args), json(accepts[1].result or vim.NIL))

  step = 'marunochi.debug.suggestions'
  local resp, reason = client:request_sync(EXEC, { command = 'marunochi.debug.suggestions' }, 10000, buf)
  if not resp then
    fail('marunochi.debug.suggestions got no answer (%s)', tostring(reason))
  end
  if resp.err then
    fail('marunochi.debug.suggestions failed: %s', json(resp.err))
  end
  local suggestions = type(resp.result) == 'table' and resp.result.suggestions
  if type(suggestions) ~= 'table' then
    fail('marunochi.debug.suggestions returned no suggestions list: %s', json(resp.result or vim.NIL))
  end
  local found
  for _, s in ipairs(suggestions) do
    if s.id == suggestion_id then
      found = s
    end
  end
  if not found then
    fail('marunochi.debug.suggestions does not list %s: %s', json(suggestion_id), json(suggestions))
  end
  if found.accepted ~= true then
    fail('suggestion %s is not marked accepted: %s', json(suggestion_id), json(found))
  end
  progress('suggestion %s accepted (model_version %s)', json(suggestion_id), json(found.model_version or vim.NIL))
  if inputs.after_accept ~= '' then
    local accepted_lines = api.nvim_buf_get_lines(buf, 0, -1, true)
    for _, key in ipairs(vim.fn.split(inputs.after_accept, [[\(<[^>]\+>\|.\)\zs]])) do
      sleep(inputs.key_delay)
      api.nvim_feedkeys(vim.keycode(key), 'nt', false)
    end
    wait_for('the keys after accepting to change the buffer', function()
      return not vim.deep_equal(api.nvim_buf_get_lines(buf, 0, -1, true), accepted_lines)
    end)
    sleep(200)
    -- A request flushes Neovim's pending didChange first (the proxy classifies from the edits it
    -- is sent), and one at the top of the file says the cursor left the accepted code.
    step = 'a hover request after the keys'
    local hover = { textDocument = { uri = vim.uri_from_bufnr(buf) }, position = { line = 0, character = 0 } }
    if not client:request_sync('textDocument/hover', hover, 10000, buf) then
      fail('the hover request after accepting got no answer')
    end
    progress('after accepting, typed %s: line %d is %s', json(inputs.after_accept), row,
      json(api.nvim_buf_get_lines(buf, row - 1, row, true)[1]))
  end
  progress('traffic: %d inlineCompletion request(s), %d didChange, %d $/cancelRequest',
    #requests(METHOD), #notifications('textDocument/didChange'), #notifications('$/cancelRequest'))

  finish(true, 'inline completion accepted: ' .. json(item.insertText) .. ' id ' .. suggestion_id)
end

---------------------------------------------------------------------------

local timeout_ms = tonumber(os.getenv('MARUNOCHI_NVIM_TIMEOUT_MS') or '') or 60000
vim.defer_fn(function()
  finish(false, ('timed out after %d ms while waiting for %s'):format(timeout_ms, step))
end, timeout_ms)

driver = coroutine.create(main)
-- Start once startup is over, so the main loop (not this -S source) runs the test.
vim.schedule(resume)
