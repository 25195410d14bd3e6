-- Counts what wrk sent and what came back, per thread, and prints one JSON line.
-- NAMES (set by spread.lua) makes every request hit a random counter.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  ok = 0
  path = args[1] or "/counter/hot/increment"
  spread = tonumber(args[2] or "0")
end

function request()
  sent = sent + 1
  if spread > 0 then
    return wrk.format("GET", "/counter/c" .. math.random(spread) .. "/increment")
  end
  return wrk.format("GET", path)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local total_sent, total_ok = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_ok = total_ok + thread:get("ok")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "sent": %d, "ok": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, total_sent, total_ok,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
