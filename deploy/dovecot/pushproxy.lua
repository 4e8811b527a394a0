-- pushproxy.lua: Dovecot 2.3 push-notification Lua driver for pushproxy.
--
-- Reports every transaction's message changes (new, append, read, trash,
-- expunge, flags set and cleared) with the unseen count of each touched
-- mailbox and of INBOX, in one POST to pushproxy's ingest
-- (POST /v1/dovecot/lua). Needs Lua 5.4 with lua-socket (and lua-sec for an
-- https URL). See README.md beside this file for the settings.
--
-- Body sent (version 1):
--   {"v":1,"user":"alice@example.com","txn":"<unique id>",
--    "events":[{"event":"MessageNew","mailbox":"INBOX","uidvalidity":1,"uid":4},
--              {"event":"FlagsClear","mailbox":"INBOX","uidvalidity":1,"uid":4,"flags":["\\Seen"]},
--              {"event":"MessageRead","mailbox":"INBOX","uidvalidity":1,"count":250}, ...],
--    "unseen":{"INBOX":2}}
-- No message content (sender, subject, snippet) is ever sent.

local http = require("socket.http")
local ltn12 = require("ltn12")
local mime = require("mime")
local socket = require("socket")

local LUA_VERSION = 1
local USER_AGENT = "pushproxy-dovecot-lua/1"

-- Settings (plugin { ... } or userdb extra fields) and their defaults.
local DEFAULTS = {
  pushproxy_url = nil,          -- e.g. http://127.0.0.1:8025/v1/dovecot/lua (required)
  pushproxy_user = nil,         -- Basic user name (ingest --dovecot-user)
  pushproxy_password = nil,     -- Basic password (ingest --dovecot-password)
  pushproxy_timeout = "2",      -- seconds per HTTP attempt
  pushproxy_max_events = "200", -- events sent one by one per transaction; more are folded
}

-- A transaction id must be unique and the same when the POST is retried;
-- the instance tag and counter make ids unique even across script reloads.
local instance = string.format("%x%04x", os.time(), math.random(0, 0xffff))
local txn_counter = 0

-- Dovecot 2.4 hands the lua_settings { } of 95-pushproxy-2.4.conf to
-- script_init; 2.3 calls it without settings, and the script reads
-- plugin { } through plugin_getenv. 2.3 wants 0 back.
local lua_settings = {}
function script_init(settings)
  if type(settings) == "table" then
    lua_settings = settings
  end
  return 0
end

local function setting(user, key)
  local value = lua_settings[key]
  if value == nil or value == "" then
    value = user:plugin_getenv(key)
  end
  if value == nil or value == "" then
    return DEFAULTS[key]
  end
  return value
end

-- JSON encoding --------------------------------------------------------------

local ARRAY = {} -- metatable marking a table to encode as a JSON array

local function array(t)
  return setmetatable(t or {}, ARRAY)
end

local ESCAPES = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function encode_string(s)
  return '"' .. string.gsub(s, '[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

local encode

local function encode_number(n)
  if math.type(n) == "integer" then
    return string.format("%d", n)
  end
  if n ~= n or n == math.huge or n == -math.huge then
    return "null"
  end
  local i = math.tointeger(n)
  if i then
    return string.format("%d", i)
  end
  return string.format("%.17g", n)
end

local function encode_table(t)
  local parts = {}
  if getmetatable(t) == ARRAY then
    for _, v in ipairs(t) do
      parts[#parts + 1] = encode(v)
    end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = encode_string(k) .. ":" .. encode(t[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

encode = function(v)
  local kind = type(v)
  if kind == "string" then
    return encode_string(v)
  elseif kind == "number" then
    return encode_number(v)
  elseif kind == "boolean" then
    return tostring(v)
  elseif kind == "table" then
    return encode_table(v)
  end
  return "null"
end

-- Collecting events -----------------------------------------------------------

local function count_keys(t)
  local n = 0
  if type(t) == "table" then
    for _ in pairs(t) do
      n = n + 1
    end
  end
  return n
end

-- merge_flags adds the flag names of list (e.g. {"\\Seen"}) to the array
-- into, once each.
local function merge_flags(into, list)
  if type(list) ~= "table" then
    return into
  end
  for _, flag in ipairs(list) do
    local name, seen = tostring(flag), false
    for _, have in ipairs(into) do
      seen = seen or have == name
    end
    if not seen then
      into[#into + 1] = name
    end
  end
  return into
end

-- add records one change; past max_events, changes of the same kind and
-- mailbox are folded into one event with a count. Dovecot 2.3 passes the
-- flags set or cleared as a list of names ("\\Seen") and the keywords in
-- "keywords" (older builds: keywords_set / keywords_clear).
local function add(ctx, name, event)
  local mailbox = event.mailbox or "INBOX"
  local keywords = count_keys(event.keywords or event.keywords_set or event.keywords_clear)
  ctx.mailboxes[mailbox] = true
  local entry
  if #ctx.events < ctx.max_events then
    entry = { event = name, mailbox = mailbox, uidvalidity = event.uid_validity, uid = event.uid }
    ctx.events[#ctx.events + 1] = entry
  else
    local key = name .. "\0" .. mailbox
    entry = ctx.folded[key]
    if entry == nil then
      entry = { event = name, mailbox = mailbox, uidvalidity = event.uid_validity, count = 0 }
      ctx.folded[key] = entry
      ctx.events[#ctx.events + 1] = entry
    end
    entry.count = entry.count + 1
  end
  local flags = merge_flags(entry.flags or array(), event.flags)
  if #flags > 0 then
    entry.flags = flags
  end
  if keywords > 0 then
    entry.keywords = (entry.keywords or 0) + keywords
  end
end

function dovecot_lua_notify_begin_txn(user)
  txn_counter = txn_counter + 1
  return {
    user = user,
    id = string.format("%s.%s.%d", tostring(user.session_id or "-"), instance, txn_counter),
    max_events = math.tointeger(tonumber(setting(user, "pushproxy_max_events"))) or 200,
    events = array(),
    folded = {},
    mailboxes = {},
  }
end

function dovecot_lua_notify_event_message_new(ctx, event)
  add(ctx, "MessageNew", event)
end

function dovecot_lua_notify_event_message_append(ctx, event)
  add(ctx, "MessageAppend", event)
end

function dovecot_lua_notify_event_message_read(ctx, event)
  add(ctx, "MessageRead", event)
end

function dovecot_lua_notify_event_message_trash(ctx, event)
  add(ctx, "MessageTrash", event)
end

function dovecot_lua_notify_event_message_expunge(ctx, event)
  add(ctx, "MessageExpunge", event)
end

function dovecot_lua_notify_event_flags_set(ctx, event)
  add(ctx, "FlagsSet", event)
end

function dovecot_lua_notify_event_flags_clear(ctx, event)
  add(ctx, "FlagsClear", event)
end

-- Sending ---------------------------------------------------------------------

-- unseen_of is the mailbox's unseen count after the transaction, or nil
-- when it cannot be read (e.g. the mailbox was deleted).
local function unseen_of(user, name)
  local ok, unseen = pcall(function()
    local box = user:mailbox(name)
    local synced, status = pcall(function()
      box:sync()
      return box:status(dovecot.storage.STATUS_UNSEEN)
    end)
    box:free()
    if not synced then
      error(status, 0)
    end
    return status.unseen
  end)
  if not ok then
    dovecot.i_warning("pushproxy: reading the unseen count of a mailbox failed: " .. tostring(unseen))
    return nil
  end
  return unseen
end

-- post sends body, retrying once after a network error, a 5xx or a 429.
local function post(user, body, txn)
  local url = setting(user, "pushproxy_url")
  if url == nil then
    dovecot.i_error("pushproxy: pushproxy_url is not set; no notification sent")
    return
  end
  local requester = http
  if string.sub(url, 1, 6) == "https:" then
    requester = require("ssl.https")
  end
  local headers = {
    ["content-type"] = "application/json",
    ["content-length"] = tostring(#body),
    ["user-agent"] = USER_AGENT,
  }
  local name, password = setting(user, "pushproxy_user"), setting(user, "pushproxy_password")
  if name ~= nil and password ~= nil then
    headers["authorization"] = "Basic " .. mime.b64(name .. ":" .. password)
  end
  requester.TIMEOUT = tonumber(setting(user, "pushproxy_timeout")) or 2
  local problem
  for attempt = 1, 2 do
    local answer = {}
    local ok, code = requester.request({
      url = url,
      method = "POST",
      headers = headers,
      source = ltn12.source.string(body),
      sink = ltn12.sink.table(answer),
    })
    if ok and code >= 200 and code < 300 then
      return
    end
    if ok then
      problem = string.format("HTTP %d: %s", code, string.sub(table.concat(answer), 1, 300))
      if code >= 400 and code < 500 and code ~= 429 then
        break -- the request itself is wrong: retrying will not help
      end
    else
      problem = tostring(code)
    end
    if attempt == 1 then
      socket.sleep(0.2)
    end
  end
  dovecot.i_error("pushproxy: notification of transaction " .. txn .. " not delivered: " .. problem)
end

function dovecot_lua_notify_end_txn(ctx, success)
  if success == false or #ctx.events == 0 then
    return
  end
  ctx.mailboxes["INBOX"] = true
  local unseen = {}
  for name in pairs(ctx.mailboxes) do
    unseen[name] = unseen_of(ctx.user, name)
  end
  local body = encode({
    v = LUA_VERSION,
    user = ctx.user.username,
    txn = ctx.id,
    events = ctx.events,
    unseen = unseen,
  })
  post(ctx.user, body, ctx.id)
end
