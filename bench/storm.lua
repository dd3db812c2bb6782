-- wrk script for bench/storm_bench.py: an alert storm shaped like Alertmanager's webhook.
-- Request n carries PER_REQUEST alerts of one group; every 10 requests: 8 new firing groups
-- (a new fingerprint per alert), 1 retry of the previous request (duplicates) and 1
-- resolution of the group sent 5 requests earlier. ALERTS (the bodies' alert objects with
-- @FP@ @STATUS@ @ENDS@ placeholders) and TOKEN are prepended by the bench.
-- Arguments: <requests> (stop after this many answers; 0: run for wrk's -d) <tag>

local threads, counter, answered, bad = {}, 0, 0, 0
local limit, tag, seed = 0, "s", 5381

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  limit = tonumber(args[1]) or 0
  tag = (args[2] or "s") .. "-" .. tostring(tid)
  for i = 1, #tag do seed = bit.tobit(seed * 33 + tag:byte(i)) end
end

-- Alertmanager's fingerprint: 16 hex digits of a hash of the label set, spread uniformly
-- (as keys in the store's indexes: an ascending counter fills them otherwise). Xorshift
-- steps are a bijection of 32-bit integers, so distinct alerts never share one.
local function scramble(x)
  x = bit.bxor(x, bit.lshift(x, 13))
  x = bit.bxor(x, bit.rshift(x, 17))
  return bit.bxor(x, bit.lshift(x, 5))
end

local function fingerprint(n, j)
  local x = n * 8 + j  -- PER_REQUEST < 8
  return bit.tohex(bit.bxor(seed, scramble(bit.bnot(x)))) .. bit.tohex(scramble(x))
end

local function body(n, status)
  local template = ALERTS[(n % #ALERTS) + 1]
  local ends = status == "firing" and "0001-01-01T00:00:00Z" or "2026-11-21T11:00:00Z"
  local alerts = {}
  for j = 1, PER_REQUEST do
    local fp = fingerprint(n, j)
    alerts[j] = template:gsub("@(%u+)@", {FP = fp, STATUS = status, ENDS = ends})
  end
  return '{"version":"4","groupKey":"{}:{alertname=\\"bench\\"}","truncatedAlerts":0,'
    .. '"status":"' .. status .. '","receiver":"remediator","groupLabels":{},'
    .. '"commonLabels":{},"commonAnnotations":{},'
    .. '"externalURL":"http://alertmanager.example:9093","alerts":['
    .. table.concat(alerts, ",") .. "]}"
end

local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. TOKEN}

function request()
  counter = counter + 1
  local k, b = counter % 10, nil
  if k == 7 then
    b = body(counter - 1, "firing")        -- Alertmanager retrying: all duplicates
  elseif k == 9 then
    b = body(counter - 5, "resolved")      -- the group sent 5 requests ago resolves
  else
    b = body(counter, "firing")
  end
  return wrk.format("POST", "/alerts", headers, b)
end

function response(status, headers, b)
  answered = answered + 1
  if status ~= 202 then bad = bad + 1 end
  if limit > 0 and answered == limit then
    -- wrk runs for its -d whatever a thread does: the bench sends SIGINT on this line
    io.write("LIMIT\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local non202 = 0
  for _, t in ipairs(threads) do non202 = non202 + (tonumber(t:get("bad")) or 0) end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"non202":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, non202, e.connect + e.read + e.write + e.status + e.timeout))
end
