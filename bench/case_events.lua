-- wrk script: POST a distinct batch of case events on every request (bench/writes_ab.py).
--
-- Usage: wrk -t2 -c32 -d20s --latency -H 'Authorization: Bearer T' -s bench/case_events.lua \
--          http://127.0.0.1:PORT/v1/case-events -- NHS_FILE PHASE RUN_ID THREADS PHASES BATCH
--
-- NHS_FILE holds the NHS numbers of the children seeded before the run, one a line (each has a
-- referral). A batch holds BATCH events, cycling through five units of events:
--   a Section 47 enquiry started and its ICPC held (no plan)     -- a seeded child
--   a CIN plan started and ended                                   -- a seeded child
--   an early help assessment completed and a step-up from it       -- a seeded child
--   a dental appointment missed and a parent's feedback            -- a seeded child
--   a CP plan started, its category changed, and ended             -- a new child (999 range)
-- so a batch writes to case_event, section47_enquiry, icpc, care_plan,
-- care_plan_category_change and child, and takes the child locks and rule look-ups the API does.
-- Every event has its own event_id and every enquiry, plan and assessment its own ref. Each wrk
-- thread walks its own share of the seeded children in order, so the batches in flight at once
-- name different children and never wait on each other's child locks; the new children come from
-- the (PHASE, thread) slice of the 999 range, as in bench/referrals.lua, so no two phases of a
-- run name the same new child.
-- done() prints one BENCH_RESULT line of JSON (as bench/referrals.lua, plus the events stored and
-- rejected, read from each answer's counts) for bench/harness.py to parse.

local threads = {}
local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

-- Globals, so done() can read them from each thread with thread:get().
statuses = {}
sample = nil
events_stored = 0
events_duplicate = 0
events_rejected = 0

local seeded = {}
local child_cursor = 0
local counter = 0
local cursor = 0
local phase = 0
local run_id = "run"
batch_size = 20
local path = "/v1/case-events"

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open the NHS number file " .. tostring(args[1]))
  local thread_count = tonumber(args[4] or "2")
  local all = {}
  for line in file:lines() do
    if #line > 0 then
      table.insert(all, line)
    end
  end
  file:close()
  -- This thread's share: every thread_count-th seeded child, from its own offset.
  for i = thread_id + 1, #all, thread_count do
    table.insert(seeded, all[i])
  end
  assert(#seeded > 0, "too few seeded children for " .. thread_count .. " threads")
  phase = tonumber(args[2] or "0")
  run_id = args[3] or run_id
  local phases = tonumber(args[5] or "4")
  batch_size = tonumber(args[6] or "20")
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

local function next_seeded_child()
  child_cursor = child_cursor + 1
  return seeded[(child_cursor % #seeded) + 1]
end

local function event(kind, nhs, id, occurred_on, fields)
  return string.format(
    '{"type":"%s","event_id":"%s","child":{"nhs_number":"%s"},"occurred_on":"%s"%s}',
    kind, id, nhs, occurred_on, fields)
end

-- The events of unit `unit` (0 to 4) about one child, with refs made from `ref`.
local function unit_events(unit, ref)
  if unit == 0 then
    local nhs = next_seeded_child()
    local enquiry = '"enquiry_ref":"S47-' .. ref .. '"'
    return {
      event("section47_started", nhs, "EV-" .. ref .. "-a", "2026-01-05",
        "," .. enquiry .. ',"strategy_discussion_on":"2026-01-02"'),
      event("icpc_held", nhs, "EV-" .. ref .. "-b", "2026-01-19",
        "," .. enquiry .. ',"outcome":"no_plan","categories":[]'),
    }
  elseif unit == 1 then
    local nhs = next_seeded_child()
    local plan = '"plan_ref":"CIN-' .. ref .. '"'
    return {
      event("cin_plan_started", nhs, "EV-" .. ref .. "-a", "2025-10-01",
        "," .. plan .. ',"neglect":true'),
      event("cin_plan_ended", nhs, "EV-" .. ref .. "-b", "2025-12-01", "," .. plan),
    }
  elseif unit == 2 then
    local nhs = next_seeded_child()
    return {
      event("early_help_assessment_completed", nhs, "EV-" .. ref .. "-a", "2025-09-10",
        ',"assessment_ref":"EHA-' .. ref .. '","neglect_considered":true,'
          .. '"neglect_identified":true'),
      event("stepped_up_to_social_care", nhs, "EV-" .. ref .. "-b", "2025-09-20",
        ',"from_ref":"EHA-' .. ref .. '","reason":"Neglect persisted despite early help"'),
    }
  elseif unit == 3 then
    local nhs = next_seeded_child()
    return {
      event("health_appointment", nhs, "EV-" .. ref .. "-a", "2025-11-03",
        ',"kind":"dental","attended":false'),
      event("feedback_received", nhs, "EV-" .. ref .. "-b", "2025-11-04",
        ',"from_whom":"parent_carer","rating":4,"about":"Support from the family help team"'),
    }
  else
    local nhs = next_nhs_number()
    local plan = '"plan_ref":"CP-' .. ref .. '"'
    return {
      event("cp_plan_started", nhs, "EV-" .. ref .. "-a", "2026-02-02",
        "," .. plan .. ',"initial_category":"NEG","domestic_abuse_focus":false'),
      event("cp_plan_category_changed", nhs, "EV-" .. ref .. "-b", "2026-03-02",
        "," .. plan .. ',"category":"EMO"'),
      event("cp_plan_ended", nhs, "EV-" .. ref .. "-c", "2026-05-04", "," .. plan),
    }
  end
end

function request()
  counter = counter + 1
  local reference = string.format("%s-%d-%d-%d", run_id, phase, thread_id, counter)
  local events = {}
  local unit = 0
  while #events < batch_size do
    for _, each in ipairs(unit_events(unit % 5, reference .. "-" .. unit)) do
      if #events < batch_size then
        table.insert(events, each)
      end
    end
    unit = unit + 1
  end
  return wrk.format("POST", path, nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    local stored = tonumber((body or ""):match('"stored":(%d+)') or "0")
    local duplicate = tonumber((body or ""):match('"duplicate":(%d+)') or "0")
    local rejected = tonumber((body or ""):match('"rejected":(%d+)') or "0")
    events_stored = events_stored + stored
    events_duplicate = events_duplicate + duplicate
    events_rejected = events_rejected + rejected
    if rejected > 0 and sample == nil then
      sample = string.format("HTTP 200 with %d rejected: %s", rejected,
        (body or ""):sub(1, 600):gsub("[\r\n]", " "))
    end
  elseif sample == nil then
    sample = string.format("HTTP %d %s", status, (body or ""):sub(1, 600):gsub("[\r\n]", " "))
  end
end

function done(summary, latency, requests)
  local merged = {}
  local first_sample = nil
  local stored, duplicate, rejected = 0, 0, 0
  -- init() ran in each thread's state, not in this one: the batch size is the threads'.
  local size = threads[1] and threads[1]:get("batch_size") or batch_size
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + count
    end
    first_sample = first_sample or thread:get("sample")
    stored = stored + (thread:get("events_stored") or 0)
    duplicate = duplicate + (thread:get("events_duplicate") or 0)
    rejected = rejected + (thread:get("events_rejected") or 0)
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"statuses":{%s},"batch_size":%d,"events_stored":%d,' ..
    '"events_duplicate":%d,"events_rejected":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ","),
    size, stored, duplicate, rejected))
  if first_sample then
    io.write("BENCH_SAMPLE " .. first_sample .. "\n")
  end
end
