-- wrk script: POST the JSON body in the file given after `--`; report JSON when done.
-- With WRK_LATENCY_HISTOGRAM=1 in the environment the report adds every latency
-- seen, as [microseconds, count] pairs (wrk's lookup is slow for long runs with
-- many distinct latencies; done() runs where init's arguments are not seen).
local request_bytes

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  request_bytes = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function request()
  return request_bytes
end

local function latency_pairs(latency)
  local pairs_ = {}
  local k = 1
  while true do
    local us, count = latency(k) -- the k-th distinct latency and how often it occurred
    if us == 0 then break end
    pairs_[#pairs_ + 1] = string.format("[%d, %d]", us, count)
    k = k + 1
  end
  return "[" .. table.concat(pairs_, ", ") .. "]"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
  if os.getenv("WRK_LATENCY_HISTOGRAM") == "1" then
    io.write(', "latency_us": ', latency_pairs(latency))
  end
  io.write("}\n")
end
