-- wrk script for bench/loadgen.py: POST prepared bodies, count answers, print one JSON line.
--
-- wrk <opts> -s bench/wrk_bodies.lua URL -- MODE FILE GROUPS NTHREADS AUTH
--   MODE "template": FILE is one body with @ID@ (replaced by an id unique to this run: thread
--                    number and counter) and @GRP@ (counter modulo GROUPS, each thread from
--                    its own offset: Alertmanager sends one group's notifications one after
--                    the other, so threads in step on the same groups would make the server
--                    wait on locks no real sender makes it wait on).
--   MODE "list":     FILE holds one body per line; threads cycle through them, each from its
--                    own offset.
--   AUTH             the Authorization header value ("-" for none).
-- Every response body is scanned for "alerts_created"/"alerts_updated" (the hook's answer) so
-- the runner can check that every acknowledged alert was stored.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local mode, template, items, groups, nthreads
local counter = 0
ok2xx = 0
created = 0
updated = 0
statuses = ""
local status_counts = {}

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  mode = args[1]
  local data = readfile(args[2])
  groups = tonumber(args[3]) or 1
  nthreads = tonumber(args[4]) or 1
  if args[5] and args[5] ~= "-" then
    wrk.headers["Authorization"] = args[5]
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- Production settings redirect plain http; a TLS-terminating proxy says https like this.
  wrk.headers["X-Forwarded-Proto"] = "https"
  if mode == "list" then
    items = {}
    for line in data:gmatch("[^\n]+") do
      table.insert(items, line)
    end
    counter = math.floor((tid - 1) * #items / nthreads)
  else
    template = data
  end
end

function request()
  counter = counter + 1
  local body
  if mode == "list" then
    body = items[(counter % #items) + 1]
  else
    local id = string.format("%02x%08x", tid, counter)
    local group = (counter + math.floor((tid - 1) * groups / nthreads)) % groups
    body = template:gsub("@ID@", id):gsub("@GRP@", tostring(group))
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
    local c = body and body:match('"alerts_created": (%d+)')
    local u = body and body:match('"alerts_updated": (%d+)')
    created = created + (tonumber(c) or 0)
    updated = updated + (tonumber(u) or 0)
  end
  local parts = {}
  for code, n in pairs(status_counts) do
    table.insert(parts, code .. ":" .. n)
  end
  statuses = table.concat(parts, ",")
end

function done(summary, latency, requests)
  local ok, c, u = 0, 0, 0
  local merged = {}
  for _, thread in ipairs(threads) do
    ok = ok + (thread:get("ok2xx") or 0)
    c = c + (thread:get("created") or 0)
    u = u + (thread:get("updated") or 0)
    local s = thread:get("statuses") or ""
    for code, n in s:gmatch("(%d+):(%d+)") do
      merged[code] = (merged[code] or 0) + tonumber(n)
    end
  end
  local codes = {}
  for code, n in pairs(merged) do
    table.insert(codes, string.format('"%s": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "ok2xx": %d, ' ..
    '"alerts_created": %d, "alerts_updated": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, ok, c, u, table.concat(codes, ", "),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
