-- marunochi for Neovim: puts `marunochi proxy` in front of your language servers, shows its
-- suggestions as inline completions (Neovim 0.12) or completion-menu items (0.11), tells it where
-- the cursor rests (so the prompt there is ready before you type), and gives you feedback, status
-- and stats commands and `:checkhealth marunochi`.
--
--   require("marunochi").setup({
--     cmd = "marunochi",          -- the marunochi executable
--     model = nil,                -- a model file/directory; nil: [engine] model in config.toml
--     servers = nil,              -- names of the servers to wrap; nil: every server started with a command
--     accept_key = "<Tab>",       -- accepts the inline suggestion (falls back to the key itself)
--   })
--
-- Servers configured with vim.lsp.config/vim.lsp.enable or nvim-lspconfig are all started through
-- vim.lsp.start, where their command is wrapped: nothing else in your configuration changes.

local M = {}

M.options = { cmd = "marunochi", model = nil, servers = nil, accept_key = "<Tab>" }

local FEEDBACK = "marunochi.feedback"
local STATUS = "marunochi.status"

--- The command that runs `server_cmd` behind the proxy (unchanged if it already is).
function M.wrap(server_cmd)
  if type(server_cmd) ~= "table" or server_cmd[2] == "proxy" then
    return server_cmd
  end
  local cmd = { M.options.cmd, "proxy" }
  if M.options.model then
    vim.list_extend(cmd, { "--model", M.options.model })
  end
  table.insert(cmd, "--")
  return vim.list_extend(cmd, server_cmd)
end

local function wanted(name)
  return M.options.servers == nil or vim.tbl_contains(M.options.servers, name)
end

--- Our clients attached to `bufnr`: those that offer the feedback command.
function M.clients(bufnr)
  return vim.tbl_filter(function(client)
    local provider = client.server_capabilities.executeCommandProvider
    return provider ~= nil and vim.tbl_contains(provider.commands or {}, FEEDBACK)
  end, vim.lsp.get_clients({ bufnr = bufnr or 0 }))
end

--- Rates the last suggestion shown in this buffer: 1 good, -1 bad, with an optional comment.
function M.feedback(rating, comment)
  local clients = M.clients(0)
  if #clients == 0 then
    vim.notify("marunochi: no marunochi server in this buffer", vim.log.levels.WARN)
    return false
  end
  local arguments = { rating }
  if comment and comment ~= "" then
    table.insert(arguments, comment)
  end
  local response = clients[1]:request_sync("workspace/executeCommand", { command = FEEDBACK, arguments = arguments }, 5000, 0)
  local ok = response ~= nil and response.err == nil
  vim.notify(ok and "marunochi: thanks, noted" or "marunochi: feedback not recorded", ok and vim.log.levels.INFO or vim.log.levels.WARN)
  return ok
end

local function shown(value)
  return (value == nil or value == vim.NIL) and "-" or tostring(value)
end

--- `:MarunochiStatus`: the model, each language's adapters, today's suggestions, warm-ups and
--- suggestions made ahead, as the proxy of this buffer sees them (`marunochi.status`). Returns the
--- lines shown, or nil.
function M.status()
  local clients = M.clients(0)
  if #clients == 0 then
    vim.notify("marunochi: no marunochi server in this buffer", vim.log.levels.WARN)
    return nil
  end
  local response = clients[1]:request_sync("workspace/executeCommand", { command = STATUS, arguments = {} }, 5000, 0)
  local status = response and response.result
  if type(status) ~= "table" then
    vim.notify("marunochi: no status from the proxy", vim.log.levels.WARN)
    return nil
  end
  local model = status.model ~= vim.NIL and status.model or ("none (" .. shown(status.problem) .. ")")
  local lines = { "marunochi: model " .. model }
  for language, links in vim.spairs(status.adapters or {}) do
    table.insert(
      lines,
      string.format("  %s adapters: active %s, canary %s, shadow %s", language, shown(links.active), shown(links.canary), shown(links.shadow))
    )
  end
  for language, today in vim.spairs(status.today or {}) do
    local rate = today.decided > 0 and string.format(" (%d%% taken)", math.floor(100 * today.taken / today.decided + 0.5)) or ""
    table.insert(lines, string.format("  %s today: %d shown, %d decided, %d taken%s", language, today.shown, today.decided, today.taken, rate))
  end
  table.insert(lines, "  prompts computed ahead of a keystroke: " .. shown(status.warmed))
  table.insert(lines, "  suggestions made ahead of a keystroke: " .. shown(status.made_ahead))
  vim.notify(table.concat(lines, "\n"), vim.log.levels.INFO)
  return lines
end

--- `marunochi stats` in a scratch buffer.
function M.stats()
  local result = vim.system({ M.options.cmd, "stats" }, { text = true }):wait()
  local text = result.code == 0 and result.stdout or (result.stderr ~= "" and result.stderr or result.stdout)
  vim.cmd("botright new")
  local buf = vim.api.nvim_get_current_buf()
  vim.bo[buf].buftype = "nofile"
  vim.bo[buf].bufhidden = "wipe"
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(text, "\n", { trimempty = true }))
  vim.bo[buf].modifiable = false
  vim.api.nvim_buf_set_name(buf, "marunochi://stats")
  return buf
end

local CURSOR = "marunochi/cursor"

local function on_attach(client, bufnr)
  if not vim.tbl_contains(M.clients(bufnr), client) then
    return
  end
  -- Where the cursor comes to rest, marunochi computes the prompt before you type (it waits for
  -- the cursor to stop moving itself).
  vim.api.nvim_create_autocmd({ "CursorMoved", "BufEnter" }, {
    group = vim.api.nvim_create_augroup("marunochi_cursor_" .. bufnr, { clear = false }),
    buffer = bufnr,
    callback = function()
      if not client:is_stopped() then
        client:notify(CURSOR, vim.lsp.util.make_position_params(0, client.offset_encoding))
      end
    end,
  })
  if vim.lsp.inline_completion then
    -- 0.12: suggestions as ghost text; the accept key takes it, or is itself when there is none.
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    vim.keymap.set("i", M.options.accept_key, function()
      if not vim.lsp.inline_completion.get() then
        return M.options.accept_key
      end
    end, { expr = true, buffer = bufnr, desc = "marunochi: accept the suggestion" })
  elseif vim.lsp.completion then
    -- 0.11: the suggestion is an item of the completion menu (marked "marunochi").
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = true })
  end
end

function M.setup(options)
  M.options = vim.tbl_extend("force", M.options, options or {})
  if not M.original_start then
    M.original_start = vim.lsp.start
    vim.lsp.start = function(config, opts)
      if type(config) == "table" and wanted(config.name) then
        config = vim.deepcopy(config)
        config.cmd = M.wrap(config.cmd)
      end
      return M.original_start(config, opts)
    end
  end
  vim.api.nvim_create_autocmd("LspAttach", {
    group = vim.api.nvim_create_augroup("marunochi", { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client then
        on_attach(client, args.buf)
      end
    end,
  })
  vim.api.nvim_create_user_command("MarunochiGood", function(cmd)
    M.feedback(1, cmd.args)
  end, { nargs = "*", desc = "marunochi: the last suggestion was good" })
  vim.api.nvim_create_user_command("MarunochiBad", function(cmd)
    M.feedback(-1, cmd.args)
  end, { nargs = "*", desc = "marunochi: the last suggestion was bad [comment]" })
  vim.api.nvim_create_user_command("MarunochiStats", M.stats, { desc = "marunochi: acceptance, retention, quality" })
  vim.api.nvim_create_user_command("MarunochiStatus", function()
    M.status()
  end, { desc = "marunochi: model, adapters, today's suggestions" })
end

return M
