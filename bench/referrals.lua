-- wrk script: POST a distinct referral on every request.
--
-- Usage: wrk -t2 -c32 -d20s --latency -H 'Authorization: Bearer T' -s bench/referrals.lua \
--          http://127.0.0.1:PORT/v1/referrals -- BODIES_FILE PHASE RUN_ID THREADS [PHASES]
--
-- BODIES_FILE holds one JSON body per line with @@NHS@@ and @@REF@@ placeholders (written by
-- `python -m bench.harness bodies`). Every request gets its own Idempotency-Key, external
-- reference and valid 999-range NHS number. Each (PHASE, thread) pair walks its own slice of the
-- 999 range (PHASE 0 to PHASES-1, default 4 phases; THREADS as given to wrk -t), so no two runs
-- in one database name the same child. bench/openloop.py builds its requests the same way for
-- the fixed-rate phase; keep the two in step.
-- done() prints one BENCH_RESULT line of JSON for bench/harness.py to parse.

local threads = {}
local next_thread_id = 0
local PHASES = 4

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

-- Globals, so done() can read them from each thread with thread:get().
statuses = {}
sample = nil

local templates = {}
local counter = 0
local cursor = 0
local phase = 0
local run_id = "run"
local path = "/v1/referrals"

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open the bodies file " .. tostring(args[1]))
  for line in file:lines() do
    if #line > 0 then
      table.insert(templates, line)
    end
  end
  file:close()
  assert(#templates > 0, "the bodies file is empty")
  phase = tonumber(args[2] or "0")
  run_id = args[3] or run_id
  local thread_count = tonumber(args[4] or "2")
  local phases = tonumber(args[5] or tostring(PHASES))
  local slice = math.floor(1000000 / (phases * thread_count))
  cursor = (phase * thread_count + thread_id) * slice
  path = wrk.path
  wrk.headers["Content-Type"] = "application/json"
end

-- The next valid NHS number in this thread's slice (modulus 11; check digit 10 is never valid).
local function next_nhs_number()
  while true do
    local digits = string.format("999%06d", cursor % 1000000)
    cursor = cursor + 1
    local total = 0
    for i = 1, 9 do
      total = total + tonumber(digits:sub(i, i)) * (11 - i)
    end
    local check = 11 - total % 11
    if check == 11 then
      check = 0
    end
    if check ~= 10 then
      return digits .. check
    end
  end
end

function request()
  counter = counter + 1
  local reference = string.format("BENCH-%s-%d-%d-%d", run_id, phase, thread_id, counter)
  local body = templates[(counter % #templates) + 1]
  body = body:gsub("@@NHS@@", next_nhs_number())
  body = body:gsub("@@REF@@", reference)
  wrk.headers["Idempotency-Key"] = "key-" .. reference
  return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 300 and sample == nil then
    sample = string.format("HTTP %d %s", status, (body or ""):sub(1, 600):gsub("[\r\n]", " "))
  end
end

function done(summary, latency, requests)
  local merged = {}
  local first_sample = nil
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + count
    end
    first_sample = first_sample or thread:get("sample")
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
  if first_sample then
    io.write("BENCH_SAMPLE " .. first_sample .. "\n")
  end
end
