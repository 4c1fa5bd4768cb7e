-- Neovim (0.7+, headless) as the language server's client: what a user's editor does, step by step.
-- Input: the JSON in $POLYFUSE_NVIM (cmd, root, options, file, position, range). Output: a JSON report in
-- its "out" file. Every wait has its own deadline; a failure is reported as {"error": ...}.
local env = vim.fn.json_decode(os.getenv("POLYFUSE_NVIM"))
local report = {}

local function text(buf)
  return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
end

local function request(client, method, params, buf, ms)
  local res, err = client.request_sync(method, params, ms, buf)
  assert(res, method .. ": " .. tostring(err))
  assert(not res.err, method .. ": " .. vim.inspect(res.err))
  return res.result
end

local function main()
  vim.cmd("edit " .. vim.fn.fnameescape(env.file))
  local buf = vim.api.nvim_get_current_buf()
  local id = vim.lsp.start_client({ name = "polyfuse", cmd = env.cmd, root_dir = env.root, init_options = env.options })
  assert(id, "the language server did not start")
  assert(vim.lsp.buf_attach_client(buf, id), "could not attach the buffer")
  local client = vim.lsp.get_client_by_id(id)
  assert(vim.wait(60000, function() return client.initialized end, 20), "initialize timed out")
  report.inline_provider = client.server_capabilities.inlineCompletionProvider ~= nil
  local uri = vim.uri_from_bufnr(buf)

  -- inline completion at the cursor; the suggestion goes into the buffer as a user accepting it would
  local params = { textDocument = { uri = uri }, position = env.position, context = { triggerKind = 1 } }
  local list = request(client, "textDocument/inlineCompletion", params, buf, 300000)
  report.items = #list.items
  if #list.items > 0 then
    local item = list.items[1]
    local r = item.range
    local lines = vim.split(item.insertText, "\n", { plain = true })
    vim.api.nvim_buf_set_text(buf, r.start.line, r.start.character, r["end"].line, r["end"].character, lines)
    report.insert_text = item.insertText
    local run = { command = item.command.command, arguments = item.command.arguments }
    report.accepted = request(client, "workspace/executeCommand", run, buf, 30000)
  end
  report.after_completion = text(buf)

  -- a code action on the function: resolve its edit lazily, apply it, read the buffer back
  local ctx = { diagnostics = {}, only = { "source" } }
  local actions = request(client, "textDocument/codeAction", { textDocument = { uri = uri }, range = env.range, context = ctx }, buf, 60000)
  local chosen
  for _, action in ipairs(actions) do
    if action.title == "polyfuse: explain this code" then chosen = action end
  end
  assert(chosen, "no explain action among " .. vim.inspect(actions))
  local resolved = chosen.edit and chosen or request(client, "codeAction/resolve", chosen, buf, 300000)
  report.edit = resolved.edit
  vim.lsp.util.apply_workspace_edit(resolved.edit, client.offset_encoding or "utf-16")
  report.after_action = text(buf)
  client.stop()
  vim.wait(10000, function() return client.is_stopped() end, 20)
end

local ok, err = pcall(main)
if not ok then report.error = tostring(err) end
local fh = assert(io.open(env.out, "w"))
fh:write(vim.fn.json_encode(report))
fh:close()
vim.cmd("qa!")
