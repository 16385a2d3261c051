--- orch.supervisor.status: what a status shows of each instance, at the
-- scale of 10,000 services (issue 15).
--
-- Two costs made a status of 10,000 take a second: reading the kernel's
-- figures (/proc/PID/stat and the cgroup's stat files, 20,000 files) and a
-- Lua table per service on both sides of the socket (rows, cjson's
-- encoding and decoding, and the collector catching up with them).
-- - The figures (rss, cpu, and the cgroup's memory, tasks, oom_kills) are
--   kept per run with the time they were read. A status of at most
--   `accounting_batch` instances (256) reads the stale ones at once, as
--   before; a larger one answers with the figures as last read, each with
--   its age, and queues the stale ones: a task reads them
--   `accounting_batch` a loop turn, so requests and service events are
--   served in between, and ends when the queue is empty (no timer while
--   idle). States, pids and uptime are read at every call.
--   The reads of 10,000 services cost 0.35-0.9 s of orch's CPU (a
--   /proc/PID/stat and a cpu.stat each), and a monitor asks every few
--   seconds: the task waits SPACING times as long as each slice of reads
--   took before the next (at most a tenth of orch's time, whatever the
--   fleet: the figures of a large one get older instead), and waits while
--   a stop or start of more than `accounting_batch` services runs (their
--   exits and spawns come first; M.pause).
-- - M.json and M.table render the services straight from the instances,
--   pieces into one buffer, with no table per service: the JSON reply the
--   control socket sends as it is, or the lines of `orch ctl status`.
-- Instance:status() (the tables of sup.status) uses the same view.
local orch = require "orch"
local cgroup = require "orch.supervisor.cgroup"
local format = require "orch.ctl.format"

local M = {}

local find, concat, now_fn = string.find, table.concat, orch.now

-- ---------------------------------------------------------------- figures

-- The kernel's figures are read into one scratch table (a reading made two
-- tables of a dozen fields: at 10,000 services, 14 MB for the collector).
local scratch = {}

-- run.acct: { time read, rss, cpu, cgroup.account(run)... (4-8), queued }.
local function read(inst, run, a, now)
  local st = orch.proc.stat(inst.pid, scratch)
  a[1], a[2], a[3] = now, st and st.rss, st and st.cpu
  a[4], a[5], a[6], a[7], a[8] = cgroup.account(run, scratch)
end

-- Seconds of reads at most between two yields of the background reads. A
-- request served while they run waits for one slice at each of its loop
-- turns (accept, read, each part of a large reply's write): at 10,000
-- services a batch of 256 reads took 8 ms or more, and a status just
-- after a large start waited for five of them.
local SLICE = 0.001
-- After each slice the reads wait this many times as long as it took.
local SPACING = 9
-- A round of at least this many reads (two entries a read in the queue)
-- begins with cgroup.flush: as many as make the warm-up fold them.
local FLUSH_READS = 2 * cgroup.FLUSH_AT

-- While a stop or start of many runs (M.pause), the reads wait.
local function paused(S)
  while (S.acct_pause or 0) > 0 do
    S.acct_resume = S.acct_resume or orch.cond()
    S.acct_resume:wait()
  end
end

-- Reads the queued runs' figures, at most S.accounting_batch and SLICE
-- seconds of them a loop turn, each slice followed by SPACING times its
-- duration without reads, until the queue is empty. A run queued while
-- this runs joins the next round.
local function refresh(S)
  while S.acct_q do
    local q = S.acct_q
    S.acct_q = nil
    local batch, k, since = S.accounting_batch, 0, nil
    for j = 1, #q, 2 do
      local now = now_fn()
      -- Yield before each batch, the first too: the request that queued
      -- them is answered first.
      if k == 0 or k >= batch or now - since >= SLICE then
        orch.sleep(since and (now - since) * SPACING or 0)
        paused(S)
        now = now_fn()
        since, k = now, 0
        -- A round of many reads begins with one fold of the kernel's
        -- pending CPU figures (cgroup.flush): read in definition order, the
        -- cgroups of services that ran since their last read were each
        -- unlinked from a list of their siblings walked from its newest
        -- end (10,000 cgroups read so by path: 7.1 s, 2.0 s after one read
        -- of their parent). Part of the first slice.
        if j == 1 and #q >= FLUSH_READS then cgroup.flush(S) end
      end
      k = k + 1
      local inst, run = q[j], q[j + 1]
      local a = run.acct
      a[9] = nil
      if run.alive and inst.run == run and inst.pid and now - a[1] >= S.accounting_max_age then
        read(inst, run, a, now)
      end
    end
  end
end

local function queue(S, inst, run)
  local q = S.acct_q
  if not q then
    q = {}
    S.acct_q = q
  end
  q[#q + 1] = inst
  q[#q + 1] = run
  if not S.acct_task then
    -- (The supervisor's own budget, Sup.own_budget: a read of many is
    -- orch's own work, which a tiny Lua time budget interrupted.)
    S.acct_task = S.own_budget(orch.task(function()
      local ok, err = pcall(refresh, S)
      S.acct_task = nil
      if not ok then S:log("status: reading the figures failed: " .. tostring(err)) end
    end))
  end
end

--- A stop or start of more than accounting_batch services begins (on =
-- true) or ends (on = false): the background reads wait until every such
-- one has ended (on's nest).
function M.pause(S, on)
  local n = (S.acct_pause or 0) + (on and 1 or -1)
  S.acct_pause = n > 0 and n or nil
  if n <= 0 and S.acct_resume then S.acct_resume:broadcast() end
end

--- For a stop or start of `n` instances: nil when n is at most
-- accounting_batch, else the pause, as a value to close (local x <close>)
-- that ends it however the stop or start ends (an error, a cancel).
local unpause = { __close = function(t) M.pause(t.S, false) end }
function M.paused_for(S, n)
  if n <= S.accounting_batch then return nil end
  M.pause(S, true)
  return setmetatable({ S = S }, unpause)
end

--- The figures of a live run (the accounting array above, or nil): read
-- again when older than accounting_max_age, at once, or with `defer`
-- queued (then the array is returned as it was: a[1] is -math.huge while
-- never read, and its figures are nil).
function M.accounting(inst, run, now, defer)
  local S = inst.sup
  local a = run.acct
  if a and now - a[1] < S.accounting_max_age then return a end
  a = a or run:accounting()
  if defer then
    if not a[9] then
      a[9] = true
      queue(S, inst, run)
    end
  else
    read(inst, run, a, now)
  end
  return a
end

--- Whether a status of `n` instances reads stale figures in the background.
function M.defer(S, n)
  return n > S.accounting_batch
end

--- What every status shows of an instance: run, whether it is alive, the
-- state shown (a SIGSTOPped process shows "stopped" with its stop signal,
-- a frozen one "frozen"), the stop signal, the pid (alive only) and the
-- accounting array (alive with a pid only).
function M.view(inst, now, defer)
  local run = inst.run
  local alive = run and run.alive
  local state, stop_signal = inst.state, nil
  local pid = alive and inst.pid or nil
  local a = pid and M.accounting(inst, run, now, defer) or nil
  if alive and run.proc then
    local pstate, _, stopsig = run.proc:status()
    if pstate == "stopped" then state, stop_signal = "stopped", stopsig end
  end
  if inst.frozen then state = "frozen" end
  return run, alive, state, stop_signal, pid, a
end

-- ---------------------------------------------------------------- JSON

-- A string as JSON text: quoted, escaped, each byte that starts no valid
-- UTF-8 sequence replaced by U+FFFD (JSON text is UTF-8). Here rather than
-- cjson: no module is loaded while a status is made (at its fd limit, orch
-- could not open one).
local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
local function esc(c) return ESC[c] or string.format("\\u%04x", c:byte()) end
local function quote(s)
  if not utf8.len(s) then
    local out, i = {}, 1
    while true do
      local ok, bad = utf8.len(s, i)
      if ok then out[#out + 1] = s:sub(i) break end
      out[#out + 1] = s:sub(i, bad - 1)
      out[#out + 1] = "\u{FFFD}"
      i = bad + 1
    end
    s = concat(out)
  end
  return '"' .. s:gsub('[%c"\\]', esc) .. '"'
end

-- Appends the JSON text of a value to p after n; returns the new n. Plain
-- strings (no quote, backslash, control or non-ASCII byte) go in as they
-- are, between quotes; numbers as Lua writes them (%.14g, as cjson).
local huge = math.huge
local function val(p, n, v)
  local tv = type(v)
  if tv == "string" then
    if find(v, '[%c"\\\127-\255]') then
      p[n + 1] = quote(v)
      return n + 1
    end
    p[n + 1], p[n + 2], p[n + 3] = '"', v, '"'
    return n + 3
  elseif tv == "number" then
    if v ~= v or v == huge or v == -huge then p[n + 1] = "null" else p[n + 1] = v end
    return n + 1
  elseif tv == "boolean" then
    p[n + 1] = v and "true" or "false"
    return n + 1
  end
  p[n + 1] = "null"
  return n + 1
end

-- One instance's object, the fields of Instance:status() in a fixed order
-- (absent ones left out, as cjson leaves out nil).
-- The common case, a running service with its figures and nothing to
-- explain, goes to the C writer (format.status_json's j:common) in one call:
-- no string per record (a string.format a record, joined twice, made 8 MB
-- for the collector at every status of 10,000 services).
local mtype = math.type

local function json_one(S, inst, now, defer, p, n, out)
  local run, alive, state, stop_signal, pid, a = M.view(inst, now, defer)
  local read = a and a[1] > -huge
  if read and inst.start_time and inst.exit_code == nil and inst.exit_signal == nil and inst.status_text == nil
     and inst.reason == nil and stop_signal == nil and S.cgroup_off == nil and mtype(a[2]) == "integer" then
    local cg, cpu, memory, tasks, oom, ctls = cgroup.figures(inst, run, a[4], a[5], a[6], a[7], a[8])
    cpu = cpu or a[3]
    local sink = inst:log_sink()
    -- The writer reads the cgroup's path itself, and declines (false) one
    -- that needs an escape.
    if cg and not ctls and type(cpu) == "number" and cpu < huge
       and out:common(inst.name, inst.service, inst.index, state, pid, inst.start_time, now - run.started,
         inst.restarts, sink and sink.lines or 0, sink and sink.dropped or 0, a[2], now - a[1], cpu, cg,
         memory, tasks, oom) then
      return n, state
    end
  end
  -- Names are letters, digits, '_', '.', '@', '-' and ':' (schema.lua).
  p[n + 1], p[n + 2], p[n + 3], p[n + 4] = '{"name":"', inst.name, '","service":"', inst.service
  p[n + 5], p[n + 6], p[n + 7], p[n + 8], p[n + 9] = '","index":', inst.index, ',"state":"', state, '"'
  n = n + 9
  if pid then
    p[n + 1], p[n + 2] = ',"pid":', pid
    n = n + 2
  end
  if alive then
    if inst.start_time then
      p[n + 1] = ',"start_time":'
      n = val(p, n + 1, inst.start_time)
    end
    p[n + 1] = ',"uptime":'
    n = val(p, n + 1, now - run.started)
  end
  p[n + 1], p[n + 2] = ',"restarts":', inst.restarts
  n = n + 2
  if inst.exit_code ~= nil then p[n + 1] = ',"exit_code":' n = val(p, n + 1, inst.exit_code) end
  if inst.exit_signal ~= nil then p[n + 1] = ',"exit_signal":' n = val(p, n + 1, inst.exit_signal) end
  if inst.status_text ~= nil then p[n + 1] = ',"status_text":' n = val(p, n + 1, inst.status_text) end
  if inst.reason ~= nil then p[n + 1] = ',"reason":' n = val(p, n + 1, inst.reason) end
  local sink = inst:log_sink()
  p[n + 1], p[n + 2], p[n + 3], p[n + 4] = ',"log_lines":', sink and sink.lines or 0, ',"log_dropped":', sink and sink.dropped or 0
  n = n + 4
  local cg, cpu, memory, tasks, oom, ctls = cgroup.figures(inst, alive and run, read and a[4], read and a[5],
    read and a[6], read and a[7], read and a[8])
  local path = cg and cg:path()
  if read then
    if a[2] ~= nil then p[n + 1] = ',"rss":' n = val(p, n + 1, a[2]) end
    cpu = cpu or a[3]
    p[n + 1] = ',"accounting_age":'
    n = val(p, n + 1, now - a[1])
  end
  if cpu ~= nil then p[n + 1] = ',"cpu":' n = val(p, n + 1, cpu) end
  if path ~= nil then p[n + 1] = ',"cgroup":' n = val(p, n + 1, path) end
  if ctls ~= nil then
    p[n + 1] = ',"cgroup_controllers":{'
    n = n + 1
    local first = true
    for ctl, v in pairs(ctls) do
      p[n + 1] = first and "" or ","
      n = val(p, n + 1, ctl)
      p[n + 1] = ":"
      n = val(p, n + 1, v)
      first = false
    end
    p[n + 1] = "}"
    n = n + 1
  end
  if memory ~= nil then p[n + 1] = ',"memory":' n = val(p, n + 1, memory) end
  if tasks ~= nil then p[n + 1] = ',"tasks":' n = val(p, n + 1, tasks) end
  if oom ~= nil then p[n + 1] = ',"oom_kills":' n = val(p, n + 1, oom) end
  if stop_signal ~= nil then p[n + 1] = ',"stop_signal":' n = val(p, n + 1, stop_signal) end
  if S.cgroup_off ~= nil then p[n + 1] = ',"cgroup_off":' n = val(p, n + 1, S.cgroup_off) end
  p[n + 1] = "}"
  return n + 1, state
end

--- The JSON text of the instances' status objects (an array), and how many
-- of them are not running.
function M.json(S, insts, defer)
  local now = now_fn()
  local out <close> = format.status_json(#insts)
  local p, not_running = {}, 0
  for i = 1, #insts do
    local n, state = json_one(S, insts[i], now, defer, p, 0, out)
    if n > 0 then out:raw(concat(p, "", 1, n)) end
    if state ~= "running" then not_running = not_running + 1 end
  end
  return out:text(), not_running
end

-- ---------------------------------------------------------------- the table


--- The lines of `orch ctl status` for the instances (orch.ctl.format's
-- status_lines, as the client makes them from the JSON), as one string,
-- and how many of them are not running. When some figures shown were not
-- read for this request (more than accounting_batch services), a last line
-- says how many and how old they are.
-- The rows go to format.status_table, which makes the text in C: no
-- string per cell or line (at 10,000 services the cells and lines were
-- 4 MB for the collector at every status).
function M.table(S, insts, defer)
  local now = now_fn()
  local stale, oldest = 0, 0
  local not_running = 0
  local max_age = S.accounting_max_age
  local where
  local rows <close> = format.status_table(#insts)
  for i = 1, #insts do
    local inst = insts[i]
    local run, alive, state, _, pid, a = M.view(inst, now, defer)
    local cell, why, text = state, false, false
    if state ~= "running" then
      not_running = not_running + 1
      local code, sig = inst.exit_code, inst.exit_signal
      if (code ~= nil or sig ~= nil)
         and (state == "exited" or state == "backoff" or state == "fatal" or state == "stopped") then
        cell = state .. (sig and (" (signal " .. tostring(sig) .. ")") or (" (exit " .. tostring(code) .. ")"))
      end
      why = inst.reason
      why = type(why) == "string" and format.cell(why)
    end
    text = inst.status_text
    text = type(text) == "string" and text ~= "" and format.cell(text)
    local rss, cpu, oom, ctls
    local read = a and a[1] > -huge
    if a then
      local age = now - a[1]
      if age >= max_age then
        stale = stale + 1
        if read and age > oldest then oldest = age end
      end
    end
    if read then rss = a[2] end
    local _
    _, cpu, _, _, oom, ctls = cgroup.figures(inst, alive and run, read and a[4], read and a[5], nil, nil, read and a[8])
    if ctls then
      where = where or { v2 = {}, v1 = {} }
      for ctl, v in pairs(ctls) do if where[v] then where[v][ctl] = true end end
    end
    if read then cpu = cpu or a[3] end
    rows:row(inst.name, cell, pid, alive and (now - run.started), inst.restarts, rss, cpu, oom, why, text)
  end
  local out = rows:text()
  local notes = format.status_notes(#insts > 0 and S.cgroup_off or nil, where)
  if S.procfs_note then notes[#notes + 1] = S.procfs_note end
  if stale > 0 then
    notes[#notes + 1] = string.format("RSS and CPU of %d service%s: %s; being read again",
      stale, stale == 1 and "" or "s",
      oldest > 0 and string.format("as read up to %.0f s ago (- not read yet)", oldest) or "not read yet (-)")
  end
  if #notes > 0 then out = out .. "\n" .. concat(notes, "\n") end
  return out, not_running, #insts
end

return M
