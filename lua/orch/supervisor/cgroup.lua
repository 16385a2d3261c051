--- orch.supervisor.cgroup: containment of services in cgroups, through the
-- public orch.cgroup API (doc/cgroup.md).
--
-- The supervisor makes one parent cgroup (sup.configure{ cgroup = PATH };
-- default "orch.<pid>" beside orch in its own cgroup) and, for an instance
-- that starts, a child "<instance>.<n>" that its process is born in
-- (orch.spawn{ cgroup = cg }), with the service's cgroup limits written
-- before the spawn. Each run owns the cgroup while it lasts (run part
-- "cgroup"); a run that ends with its cgroup empty hands it back to the
-- instance, and the instance's next run (a restart) is born in the same
-- cgroup: a restart makes and removes no directory (the kernel's mkdir,
-- rmdir and the first process's css_set cost about 90 µs of orch's CPU).
-- The cgroup goes when the instance stops, exits for good or turns fatal
-- (M.release; in a stop of many, at the stop's end: M.defer_removals), or
-- with the supervisor (M.close); a run that ends with
-- processes still inside (left behind after KILL) has them killed and its
-- cgroup removed once empty, and the next run gets a fresh one, so nothing
-- a service started outlives it.
--
-- A main process that exits 0 while its cgroup still holds processes has
-- daemonized: the run goes on, and ends when the cgroup empties (the
-- instance's "empty" event). A stop signals every process in the cgroup,
-- then cgroup.kill.
--
-- Without a writable cgroup v2 hierarchy, the supervisor says so once and
-- works as before (process groups); a service asking for a cgroup limit
-- then cannot start, with that reason.
local orch = require "orch"
local Run = require "orch.supervisor.run"

local M = {}

--- The limits (of a service's `limits`) that are cgroup limits.
M.LIMITS = { "memory_max", "memory_high", "swap_max", "pids_max", "cpu_max", "cpu_weight", "io_weight" }
local is_limit = {}
for _, k in ipairs(M.LIMITS) do is_limit[k] = true end
M.is_limit = is_limit

local nsups = 0

-- An existing parent is used only when no other user could change it or
-- its ancestors (doc/security.md, "Cgroups"): orch.cgroup.create checks the
-- same of the parent it makes a cgroup in.
local TRUSTED = { trusted = true }

-- A short stable name for a string (32-bit FNV-1a, hex).
local function fnv1a(str)
  local h = 0x811c9dc5
  for i = 1, #str do h = ((h ~ str:byte(i)) * 0x01000193) & 0xffffffff end
  return string.format("%08x", h)
end

local function cgroup_limits(l)
  if not l then return nil end
  local t
  for k, v in pairs(l) do
    if is_limit[k] then
      t = t or {}
      t[k] = v
    end
  end
  return t
end
M.cgroup_limits = cgroup_limits

--- The supervisor's parent cgroup (made on first use), or nil when cgroups
-- are off: S.cgroup_off then says why (logged once).
--- The default parent cgroup (relative to orch's own) of `orch run` with
-- control socket `sock`.
function M.socket_parent(sock) return "orch.s" .. fnv1a(sock) end

-- The default parent's path for S.
local function default_path(S)
  local sock = S.main and require("orch.supervisor.persist").socket(S)
  return sock and M.socket_parent(sock) or ("orch." .. orch.getpid() .. (S.main and "" or ("." .. S.cgroup_id)))
end

function M.base(S)
  if S.cgroup_base or S.cgroup_off then return S.cgroup_base end
  if S.cgroup_parent == false then
    S.cgroup_off = "turned off (sup.configure{ cgroup = false })"
    return nil
  end
  -- One parent per supervisor: a second one in the same process (sup.new)
  -- gets its own. `orch run`'s is named after its control socket, its
  -- identity across runs: the next orch of that socket (after a SIGKILL)
  -- takes the tree over and removes what is left of it when it ends.
  if not S.cgroup_id then
    nsups = nsups + 1
    S.cgroup_id = nsups
  end
  local path = S.cgroup_parent or default_path(S)
  local cg, err, ename = orch.cgroup.create(path)
  if not cg and ename == "EEXIST" then cg, err, ename = orch.cgroup.open(path, TRUSTED) end
  -- Out of fds (or memory) now is no reason to run without cgroups: this
  -- start fails, the next one tries again.
  if not cg and (ename == "EMFILE" or ename == "ENFILE" or ename == "ENOMEM") then return nil, err, ename end
  if not cg then
    S.cgroup_off = tostring(err)
    S:log("cgroups off: " .. S.cgroup_off .. "; services are tracked and stopped by process group")
    return nil
  end
  S.cgroup_base, S.cgroup_seq = cg, 0
  -- An orch that ends without a shutdown (exit_when_idle, the end of a
  -- plain script) or a supervisor dropped unclosed: when Lua closes or
  -- collects the guard, the tree goes if it is empty.
  local path = cg:path()
  S.cgroup_guard = setmetatable({ path = path }, { __gc = function(g)
    local c = g.path and orch.cgroup.open(g.path)
    if c then
      c:remove({ recursive = true })
      c:close()
    end
  end })
  if not S.cgroup_parent then M.sweep_stale(S, cg) end
  return cg
end

--- The default parents of supervisors whose orch is gone (killed with
-- SIGKILL: nothing removed them) go once empty; their processes (adopted
-- by a new orch, or not) are left alone.
function M.sweep_stale(S, base)
  local up = base:path():match("^(.*)/[^/]*$")
  local parent = orch.cgroup.open((up == nil or up == "") and "/" or up)
  if not parent then return end
  for _, name in ipairs(parent:children() or {}) do
    local pid = math.tointeger(tonumber(name:match("^orch%.(%d+)$") or name:match("^orch%.(%d+)%.%d+$") or ""))
    if pid and pid ~= orch.getpid() and not orch.proc.info(pid) then
      local cg = orch.cgroup.open(parent:path():gsub("/$", "") .. "/" .. name)
      if cg then
        orch.task(function()
          if cg:wait_empty() then cg:remove({ recursive = true }) end
          cg:close()
        end)
      end
    end
  end
  parent:close()
end

--- The directory of `orch run`'s own tree of S's control socket, once made
-- (nil otherwise, or with a parent given by sup.configure{ cgroup = ... }):
-- the fd holder removes its empty cgroups when it outlives a killed orch
-- and every service (holder.lua, src/fdholder.c).
function M.tree_dir(S)
  if S.cgroup_parent ~= nil or not S.main or not S.cgroup_base then return nil end
  return S.cgroup_base:dir()
end

--- The processes in `orch run`'s own tree of S's control socket (what a
-- previous orch of the socket left there), without making it; {} without
-- one (no cgroups, a parent given by sup.configure{ cgroup = ... }); nil,
-- err, "EMFILE" when it cannot be looked at for want of fds.
function M.tree_pids(S)
  if S.cgroup_parent ~= nil or not S.main then return {} end
  local top, err, code = orch.cgroup.open(default_path(S), TRUSTED)
  -- Out of fds (spare ones too): nil, err, code: not known to be empty.
  if not top then return (code == "EMFILE" or code == "ENFILE") and nil or {}, err, code end
  local pids = top:populated() and top:procs() or {}
  top:close()
  return pids
end

local wait_empty
-- How a run left stopping is stopped when its service is no longer
-- defined (the defaults of a service's `stop`).
local DROP_STOP = { signal = "TERM", timeout = 10, kill_timeout = 5 }

--- After a recovery or a hand-over, before the services start: what a
-- previous orch of the same control socket left in its tree that no run
-- took over (a process spawned in the moments before its SIGKILL, never
-- written to its state record) is killed, and every cgroup of the tree
-- that is not a run's goes once empty. Only in `orch run`'s own tree
-- (named after the control socket, which one orch at a time holds): a
-- parent given by sup.configure{ cgroup = ... } may hold others' cgroups.
function M.sweep_strays(S)
  if S.cgroup_parent ~= nil or not S.main then return end
  local base, _, code = M.base(S)
  -- Out of fds: the sweep waits for them (what is left unswept would run
  -- on unsupervised beside the services started next).
  while not base and (code == "EMFILE" or code == "ENFILE") and orch.current() do
    require("orch.supervisor.persist").wait_fds(S, 16, "the sweep of the previous orch's cgroup tree")
    base, _, code = M.base(S)
  end
  if not base then return end
  local top = base:path():gsub("/$", "")
  local mine, dropped = {}, {}
  for cg in pairs(S.cgroups or {}) do mine[cg:path()] = true end
  -- A recorded process not adopted yet is left alone (one waiting for a
  -- dependency is adopted later). One that will not be (its service no
  -- longer defined, or left stopping: the previous orch was killed in its
  -- stop, whose cgroup removals a stop of many defers to its end) is
  -- handoff.drop's, and its run's cgroup is stopped here the service's
  -- way: every process in it (an escapee too) gets the stop signal, KILL
  -- after the stop timeout, and the cgroup goes once empty.
  for _, e in pairs(S.inherited or {}) do
    local where = e.pid and orch.cgroup.of(e.pid)
    local name = where and where:sub(1, #top + 1) == top .. "/" and where:sub(#top + 2):match("^[^/]+")
    if name then
      mine[top .. "/" .. name] = true
      if not e.want or not S.by_name[e.name] then dropped[top .. "/" .. name] = e end
    end
  end
  for path, e in pairs(dropped) do
    local cg = orch.cgroup.open(path)
    if cg then
      e.cgroup_stop = true
      local inst = S.by_name[e.name]
      local st = inst and inst.cfg.stop or DROP_STOP
      orch.task(function()
        cg:kill(st.signal)
        if not wait_empty(cg, st.timeout) then
          cg:kill()
          wait_empty(cg, st.kill_timeout)
        end
        cg:remove({ recursive = true })
        cg:close()
      end)
    end
  end
  for _, name in ipairs(base:children() or {}) do
    local path = top .. "/" .. name
    local cg = not mine[path] and orch.cgroup.open(path)
    if cg then
      local pids = cg:populated() and cg:procs() or {}
      if #pids > 0 then
        S:log(string.format("killing %d process%s a previous orch left in cgroup %s (not in its state record): %s",
          #pids, #pids == 1 and "" or "es", name, table.concat(pids, " ")))
        cg:kill()
      end
      orch.task(function()
        if cg:wait_empty(30) then cg:remove({ recursive = true }) end
        cg:close()
      end)
    end
  end
end

-- The supervisor's parent cgroup goes, with the empty cgroups left below
-- it; what cannot go (a process inside that is not a run's: put there from
-- outside, or one that outlived KILL) is said, with where it is and what
-- holds it.
local function remove_base(S, base)
  local ok, err = base:remove({ recursive = true })
  if not ok then
    local pids = base:procs() or {}
    S:log(string.format("cgroup %s left behind: %s%s", base:dir(), tostring(err),
      #pids > 0 and ("; processes inside: " .. table.concat(pids, " ")) or ""))
  end
  base:close()
end

-- A run's cgroup is removed: forgotten, and the parent of a closed
-- supervisor goes with the last one.
local function removed(S, cg)
  S.cgroups[cg] = nil
  cg:close()
  local parent = S.cgroup_closing
  if parent and next(S.cgroups) == nil then
    S.cgroup_closing = nil
    remove_base(S, parent)
  end
end

-- The controller each cgroup limit needs, and the limits cgroup v1 has no
-- equivalent for (doc/cgroup.md, cg:set).
local CONTROLLER = { memory_max = "memory", memory_high = "memory", swap_max = "memory", pids_max = "pids",
                     cpu_max = "cpu", cpu_weight = "cpu", io_weight = "io" }
local V2_ONLY = { memory_high = true, swap_max = true, io_weight = true }

-- Where the runs' cgroups can get each controller ("v2" or "v1", from
-- orch.cgroup.info), or nil and why this supervisor has no cgroups. Found
-- once (until the configuration changes) without keeping anything: the
-- parent is made and removed again when it did not exist (its default
-- name may still change with the control socket), or the running tree is
-- asked. A controller a limit needs in v2 is really enabled, once, in a
-- throwaway cgroup below the parent (p.enabled[ctl]: true, or the error):
-- what the kernel refuses (EBUSY: a process inside an ancestor; EACCES;
-- EOPNOTSUPP) is then refused when the service is defined.
local function probe(S, enable)
  local p = S.cgroup_probe
  if p and not enable then return p end
  if not p then
    if S.cgroup_parent == false then
      p = { off = "turned off (sup.configure{ cgroup = false })" }
    elseif S.cgroup_off and not S.cgroup_base then
      p = { off = S.cgroup_off }
    else
      local info = orch.cgroup.info()
      p = { where = {}, enabled = {} }
      for ctl, where in pairs(info and info.controllers or {}) do p.where[ctl] = where end
    end
    S.cgroup_probe = p
  end
  if p.off or (p.checked and (not enable or p.enabled[enable] ~= nil)) then return p end
  local base, made = S.cgroup_base, false
  if not base then
    if not S.cgroup_id then
      nsups = nsups + 1
      S.cgroup_id = nsups
    end
    local path = S.cgroup_parent or default_path(S)
    local cg, err, ename = orch.cgroup.create(path)
    made = cg ~= nil
    if not cg and ename == "EEXIST" then cg, err, ename = orch.cgroup.open(path, TRUSTED) end
    if not cg then
      p.off, p.where = tostring(err), nil
      -- Out of fds now: asked again next time.
      if ename == "EMFILE" or ename == "ENFILE" or ename == "ENOMEM" then S.cgroup_probe = nil end
      return p
    end
    base = cg
  end
  p.checked = true
  if enable and p.enabled[enable] == nil then
    local name, cg, err, ename = 0
    repeat
      name = name + 1
      cg, err, ename = orch.cgroup.create(base:path() .. "/orch-probe." .. orch.getpid() .. "." .. name,
                                          { controllers = { enable } })
    until cg or ename ~= "EEXIST"
    if cg then
      cg:remove()
      cg:close()
    end
    p.enabled[enable] = cg and true or tostring(err)
  end
  if made then base:remove({ recursive = true }) end
  if base ~= S.cgroup_base then base:close() end
  return p
end

--- Where the runs' cgroups can get each controller ({ memory = "v1", io =
-- "v2", ... }), or nil when cgroups are off.
function M.controllers(S)
  local p = probe(S)
  return p.where
end

--- Raises when the host (or the configuration) cannot apply one of the
-- cgroup limits of service definition cfg: limits asked for explicitly are
-- never ignored, and never found missing only when the service starts.
function M.check(S, cfg)
  local l = cgroup_limits(cfg.limits)
  if not l then return end
  local names = {}
  for k in pairs(l) do names[#names + 1] = k end
  table.sort(names)
  local p = probe(S)
  if p.off then
    error(string.format("service '%s': limits.%s: cgroup limits need cgroups, which are off: %s",
      cfg.name, names[1], p.off), 0)
  end
  for _, k in ipairs(names) do
    local ctl = CONTROLLER[k]
    local where = p.where[ctl]
    if not where and not V2_ONLY[k] then
      error(string.format("service '%s': limits.%s: this host has no %s controller for orch's cgroups "
        .. "(cgroup v2 does not offer it to orch, and there is no cgroup v1 hierarchy of it)", cfg.name, k, ctl), 0)
    elseif where ~= "v2" and V2_ONLY[k] then
      error(string.format("service '%s': limits.%s: it needs the %s controller in cgroup v2, which does not "
        .. "offer it to orch here (cgroup v1 has no equivalent)", cfg.name, k, ctl), 0)
    elseif where == "v2" then
      local ok = probe(S, ctl).enabled[ctl]
      if ok ~= true then
        error(string.format("service '%s': limits.%s: the %s controller cannot be enabled for orch's cgroups: %s",
          cfg.name, k, ctl, tostring(ok)), 0)
      end
    end
  end
end

--- The configuration of the cgroups changed (sup.configure{ cgroup }):
-- the services defined so far are checked again.
function M.reconfigured(S, services)
  S.cgroup_probe = nil
  for _, svc in pairs(services) do M.check(S, svc.cfg) end
end

-- cg:wait_empty that never takes a failed wait for an empty cgroup: true
-- once it is empty (or gone), false at the timeout (nil: none). A wait
-- that cannot watch the cgroup (no fd, at orch's fd limit) is said once
-- through say(reason) when given, and the cgroup is then read every 0.1 s
-- until it empties, the time is up, or a wait can watch it again.
wait_empty = function(cg, timeout, say)
  local deadline = timeout and orch.now() + timeout
  local polling
  while true do
    local left = deadline and math.max(0, deadline - orch.now())
    local ok, err, code = cg:wait_empty(polling and math.min(left or 0.1, 0.1) or left)
    if ok or code == "ENOENT" then return true end
    if code == "ECANCELED" then return false end          -- closed meanwhile
    if code ~= "ETIMEDOUT" then
      if not polling then
        polling = true
        if say then say(tostring(err)) end
      end
      local p, _, pcode = cg:populated()
      if p == false or pcode == "ENOENT" then return true end
      orch.sleep(0.1)
    end
    if deadline and orch.now() >= deadline then return false end
  end
end

--- Kills what is left in a run's cgroup and removes it once empty (a task
-- of its own: the end of a run never waits for it). S.cgroups holds the
-- cgroups not removed yet, for M.close.
local function retire(S, cg)
  -- Usually empty already: removed now, without a task (rmdir fails with
  -- EBUSY while a process is inside, which no read has to ask first).
  if cg:remove() then return removed(S, cg) end
  if cg:populated() then cg:kill() end
  orch.task(function()
    if wait_empty(cg, 30, function(why)
      S:log(string.format("%s: cannot wait for it to empty (%s): reading it every 0.1s", cg:path(), why))
    end) and cg:remove() then removed(S, cg) end
  end)
end

-- The controllers a service's cgroups are made with: what its status
-- shows (memory, tasks) where cgroup v2 offers them (a v2 css is cheap),
-- and memory wherever it is when the rss rule of its limits reads it (a
-- v1 memory cgroup costs about 0.5 ms, which a restart would pay for
-- nothing otherwise). The controllers its cgroup limits need are enabled
-- (or mirrored in v1) by cg:set. Nothing else: no controller is enabled in
-- a cgroup.subtree_control that no service needs. There are four such
-- option tables (with or without memory, with or without pids), each made
-- once and shared by every service that gets it (orch.cgroup.create only
-- reads them): one per definition cost thousands of services 180 bytes each.
local copts_shared = {}

-- (bare: without what only the status reads, for a cgroup where the kernel
-- refuses to enable it.)
local function create_options(S, cfg, bare)
  local where = M.controllers(S) or {}
  local rss = where.memory and cfg.limits and cfg.limits.rss and true or false
  local memory = (where.memory == "v2" and not bare) or rss
  local pids = where.pids == "v2" and not bare
  local key = (memory and 1 or 0) + (pids and 2 or 0)
  local o = copts_shared[key]
  if not o then
    local list = {}
    if memory then list[#list + 1] = "memory" end
    if pids then list[#list + 1] = "pids" end
    o = { controllers = list }
    copts_shared[key] = o
  end
  return o
end

-- Where the kernel counts OOM kills on every host (memory.events, or v1's
-- oom_control): services with a memory limit.
local function memory_limited(inst)
  local l = inst.cfg.limits
  return l and (l.memory_max or l.memory_high or l.swap_max) and true or false
end

-- What this module knows of a cgroup and a run (weak: they go with them):
-- the instance a cgroup is for (owner), that it was seen empty after its
-- run's main process ended (empty: it stays so, only orch spawns into
-- it), that cgroup.kill emptied it (killed); a run's share of a kept
-- cgroup's totals starts at base_of[run].
local owner = setmetatable({}, { __mode = "k" })
local empty = setmetatable({}, { __mode = "k" })
local killed = setmetatable({}, { __mode = "k" })
local base_of = setmetatable({}, { __mode = "k" })
-- The CPU base of a kept cgroup read before a restart spawned into it at
-- its exit (M.reuse), for M.prepare (false: it could not be read).
local read_base = setmetatable({}, { __mode = "k" })
-- The list of the stop of many that removes the instance's cgroups at its
-- end (M.defer_removals), by instance.
local later_of = setmetatable({}, { __mode = "k" })

-- The end of a run (its part "cgroup" closes): an empty cgroup stays the
-- instance's for its next run; one still holding processes is retired.
local function park(S, cg)
  if not (S.cgroups and S.cgroups[cg]) then return end     -- sup.close took it
  local inst = owner[cg]
  -- Not one that cgroup.kill emptied: on Linux 6.18 every process later
  -- born in it (clone3 CLONE_INTO_CGROUP) is killed at once (the kernel
  -- compares the cgroup's kill count with the spawning process's cgroup's).
  if inst and inst.cgroup_idle == nil and not killed[cg] and (empty[cg] or not cg:populated()) then
    inst.cgroup_idle = cg
  else
    retire(S, cg)
  end
end

-- The run part's closer (run:own), the same for every run (Run.closer: no
-- table of parts for a run whose cgroup is its only part); the supervisor
-- is its owner's.
local function park_part(cg)
  local inst = owner[cg]
  if inst then park(inst.sup, cg) end
end
Run.closer("cgroup", park_part)

local function own(inst, run, cg)
  owner[cg] = inst
  empty[cg] = nil
  run:own("cgroup", cg, park_part)
end

-- A new run's cgroup has its cpu.stat opened (and kept, within the fd
-- budget: cg:usage) WARM_AFTER seconds after the last start, off the start
-- and restart paths: the first restart reads its CPU base before its spawn
-- (M.reuse), through the kept fd (a pread) rather than with an open of
-- cgroupfs's file (20-30 us of orch's CPU between the exit and the spawn).
-- So are its cgroup.procs (cg:procs, kept below the held directory), which
-- the stop's listing reads, and its cgroup.events (cg:populated), which a
-- restart's emptiness check and the stop read: a start of many no longer
-- opens them at each spawn (the first open of a new cgroup's file, about
-- 5 and 7 us of orch's CPU a service; orch.spawn_begin reads no
-- cgroup.events before its clone).
-- The cgroups still to be opened are S.cgroup_cold, the one timer
-- S.cgroup_warm, the last start's time S.cgroup_cold_at.
-- Once FLUSH_AT or more new cgroups were made since the parent's cpu.stat
-- was last read (S.cgroup_unfolded), the warm-up reads it first (M.flush):
-- counted across warm-ups, since a slow start can make several.
-- A run's cgroup is named after its instance (":" made "@") and the run's
-- number. A service's name may be one the kernel takes for none of its
-- cgroups' (orch.cgroup.create raised, and the start of every service
-- with it): one beginning "cgroup." (its interface files' prefix) gets a
-- "_" before it, and one longer than 200 bytes is cut there (a name of the
-- file system is 255 at most; the run's number keeps it unique).
local function cgroup_name(name)
  name = name:gsub(":", "@")
  if #name > 200 then name = name:sub(1, 200) end
  if name:sub(1, 7) == "cgroup." then name = "_" .. name end
  return name
end

local WARM_AFTER, UNREF, FLUSH_AT = 0.1, { ref = false }, 16
M.FLUSH_AT = FLUSH_AT

local function warm(S)
  -- One pass over a start's new cgroups: the supervisor's own budget.
  local _ <close> = S.own_budget()
  local late = S.cgroup_cold_at + WARM_AFTER - orch.now()
  if late > 0 then
    S.cgroup_warm = orch.timer.after(late, function() warm(S) end, UNREF)
    return
  end
  local list = S.cgroup_cold
  S.cgroup_warm, S.cgroup_cold = nil, nil
  if (S.cgroup_unfolded or 0) >= FLUSH_AT then M.flush(S) end
  for _, cg in ipairs(list) do
    if S.cgroups and S.cgroups[cg] then
      cg:procs()
      cg:populated()
      local _, kept = cg:usage("cpu")
      -- Over the fd budget: the next ones would not be kept either.
      if kept == false then break end
    end
  end
end

local function cold(S, cg)
  local list = S.cgroup_cold
  if not list then
    list = {}
    S.cgroup_cold = list
  end
  list[#list + 1] = cg
  S.cgroup_unfolded = (S.cgroup_unfolded or 0) + 1
  S.cgroup_cold_at = orch.now()
  if not S.cgroup_warm then S.cgroup_warm = orch.timer.after(WARM_AFTER, function() warm(S) end, UNREF) end
end

--- Reads the parent cgroup's cpu.stat, which makes the kernel fold every
-- service cgroup's pending CPU figures into the tree at once. Until a
-- cgroup's figures are read or folded, the kernel keeps it on a per-CPU
-- list of its siblings with pending figures, newest first, and reading one
-- cgroup's cpu.stat unlinks it from that list by walking it from the head
-- (css_rstat_flush, with interrupts off): after a start of 10,000, the
-- first read of a service's cpu.stat (a restart reads its CPU base, a
-- status its figures) walked up to 10,000 entries a CPU, 0.6-2 ms of the
-- restart, and reads of every service in definition order (oldest first)
-- walked the list once each. One read of the parent folds them all in one
-- pass (11 ms at 10,000); the reads after it find their cgroup off the list
-- (a service that ran since is back at its head). The parent's file is
-- held open like a service's, within the fd budget.
function M.flush(S)
  local base = S.cgroup_base
  S.cgroup_unfolded = nil
  if base then base:usage("cpu") end
end

--- The instance stopped, exited for good or turned fatal: the cgroup it
-- kept for a restart goes (in a stop of many, at the stop's end: see
-- M.defer_removals).
function M.release(inst)
  local cg = inst.cgroup_idle
  inst.cgroup_idle = nil
  local S = inst.sup
  if cg and S.cgroups and S.cgroups[cg] then
    local later = later_of[inst]
    if later then later[#later + 1] = cg else retire(S, cg) end
  end
end

-- The end of a stop of many: the cgroups its runs left (empty) go now.
local removals = { __close = function(d)
  for _, inst in ipairs(d.insts) do
    if later_of[inst] == d.list then later_of[inst] = nil end
  end
  local S = d.S
  for _, cg in ipairs(d.list) do
    if S.cgroups and S.cgroups[cg] then retire(S, cg) end
  end
end }

--- A stop of many (graph.stop_ordered: more than one instance) removes the
-- cgroups of the runs it ends only once it has seen them all end, rather
-- than each at its run's end: the rmdir (30-60 us of orch's CPU, the
-- largest single piece of a run's end) then no longer takes a CPU from the
-- services still ending, whose exits are what a stop's user waits for.
-- Each run's end asks "is anything left?" with a read of cgroup.events
-- instead (M.left); an empty cgroup is kept until the stop's end, when the
-- value returned (to-be-closed) is closed: every cgroup is still removed
-- before the stop returns. An instance some other stop of many has marked
-- already stays that stop's. The mark is kept beside the instance
-- (later_of), not in it: a ninth field would grow each instance's table to
-- 16 slots, a reallocation each in the middle of the stop.
function M.defer_removals(S, insts)
  if #insts < 2 or not S.cgroups then return nil end
  local list, mine = {}, {}
  for _, inst in ipairs(insts) do
    if not later_of[inst] then
      later_of[inst] = list
      mine[#mine + 1] = inst
    end
  end
  return setmetatable({ S = S, insts = mine, list = list }, removals)
end

--- Before a spawn: the instance's cgroup (kept from its previous run, or
-- made now with the service's limits), given to the spawn (opts.cgroup).
-- True, or nil and why the run cannot start.
function M.prepare(inst, run, opts)
  local S = inst.sup
  local kept = inst.cgroup_idle
  if kept then
    inst.cgroup_idle = nil
    if S.cgroups and S.cgroups[kept] then
      -- Its accounting goes on from the previous runs: this run's starts
      -- here (cpu.stat and the OOM kills count since the cgroup was made).
      -- A restart waits for this read: cpu.stat through its held fd, and
      -- memory.events only where OOM kills are counted. A restart spawned
      -- at the exit (M.reuse) read it before its spawn.
      local early = read_base[kept]
      read_base[kept] = nil
      local cpu
      if early ~= nil then cpu = early or nil else cpu = kept:usage("cpu") end
      local oom
      if memory_limited(inst) then
        local st = kept:stat()
        oom = st and st.oom_kill
      end
      base_of[run] = (cpu or oom) and { cpu = cpu, oom_kill = oom } or nil
      own(inst, run, kept)
      opts.cgroup = kept
      return true
    end
  end
  local limits = cgroup_limits(inst.cfg.limits)
  local base, berr = M.base(S)
  if not base then
    if not S.cgroup_off then return nil, berr end
    if limits then return nil, "cgroup limits need cgroups, which are off: " .. S.cgroup_off end
    return true
  end
  -- A name may be taken by a run of the previous image after `orch ctl
  -- reexec` (same pid).
  local copts = create_options(S, inst.cfg)
  local cg, err, ename
  repeat
    S.cgroup_seq = S.cgroup_seq + 1
    local name = cgroup_name(inst.name) .. "." .. S.cgroup_seq
    cg, err, ename = orch.cgroup.create(base:path() .. "/" .. name, copts)
    -- The controllers only the status reads (memory, pids) show figures:
    -- where the kernel refuses to enable them (EBUSY: a process other than
    -- orch in orch's own cgroup, such as the shell that started it), the
    -- run goes on in a cgroup without them, said once. Its limits still
    -- need theirs (cg:set below).
    if not cg and ename == "EBUSY" then
      local bare = create_options(S, inst.cfg, true)
      if bare ~= copts then
        if not S.cgroup_status_refused then
          S.cgroup_status_refused = true
          S:log(string.format("cgroups: the status shows no memory or tasks of the services (%s)", err))
        end
        copts = bare
        cg, err, ename = orch.cgroup.create(base:path() .. "/" .. name, copts)
      end
    end
  until cg or ename ~= "EEXIST"
  if not cg then return nil, err end
  if limits then
    local ok, serr = cg:set(limits)
    if not ok then
      cg:remove()
      cg:close()
      return nil, serr
    end
  end
  S.cgroups = S.cgroups or {}
  S.cgroups[cg] = true
  own(inst, run, cg)
  opts.cgroup = cg
  cold(S, cg)
  return true
end

--- A run adopted after `orch ctl reexec` or a SIGKILL of orch: its cgroup
-- (one of this supervisor's tree) becomes the run's, as if it had spawned
-- it, so that its stop and its end contain it the same way.
function M.adopt(inst, run)
  local S = inst.sup
  local base = S.cgroup_base
  local where = base and run and run.pid and orch.cgroup.of(run.pid)
  local path = base and base:path()
  if not where or where:sub(1, #path + 1) ~= path .. "/" then return end
  local cg = orch.cgroup.open(where)
  if not cg then return end
  S.cgroups = S.cgroups or {}
  S.cgroups[cg] = true
  own(inst, run, cg)
end

local EXCEPT = {}      -- cg:kill's options, filled per call

--- Signals every process of the run's cgroup (but `except`, a pid the
-- caller signalled already). True when it signalled any.
function M.signal(run, sig, except)
  local cg = run.cgroup
  if not cg then return false end
  if sig == "KILL" or sig == 9 then
    -- A read that failed (not a cgroup gone) is no empty cgroup; a
    -- cgroup.kill that failed leaves the caller its own KILL.
    local p, _, code = cg:populated()
    if p == false or (p == nil and code == "ENOENT") then return false end
    if not cg:kill() then return false end
    killed[cg] = true
    return true
  end
  -- Another signal goes to each listed process: the count says whether
  -- there was any (no cgroup.events read first: a stop signals hundreds).
  local opts
  if except then
    opts = EXCEPT
    opts.except = except
  end
  -- (A kill that reached some processes and failed to reach others says
  -- how many it reached in its 4th value: the caller's own signal would
  -- be a second one to those.)
  local n, _, _, sent = cg:kill(sig, opts)
  n = n or sent
  return n ~= nil and n > 0
end

--- M.signal(run, sig, pid) of many runs at once (a first pass's rest,
-- Instance.signal_rests): cgs[i] the runs' cgroups, pids[i] their main
-- processes, sig no KILL. The supervisor's cgroup tells whether any
-- cgroup is below theirs (orch.cgroup._kill_rest).
function M.signal_rests(S, cgs, pids, sig)
  return orch.cgroup._kill_rest(S.cgroup_base or false, cgs, pids, sig)
end

--- Is pid a member of the run's cgroup (or of a cgroup below it)?
function M.member(run, pid)
  local where = orch.cgroup.of(pid)
  local path = run.cgroup:path()
  return where ~= nil and (where == path or where:sub(1, #path + 1) == path .. "/")
end

--- After the main process exited: does the run go on in its cgroup (a
-- daemon that forked away and exited 0)?
function M.goes_on(run, code)
  return code == 0 and not run.stopping and M.populated(run)
end

--- Is anything left in the run's cgroup (after its main process ended)?
-- An empty one stays empty (only orch spawns into it): the run's end then
-- keeps it without reading cgroup.events again.
function M.populated(run)
  local cg = run.cgroup
  if cg == nil or empty[cg] then return false end
  local p, _, code = cg:populated()
  -- Unknown (a read that failed) is not empty: the drain then waits.
  if p == nil and code ~= "ENOENT" then return true end
  if not p then empty[cg] = true end
  return p
end

--- At the end of a run's main process: is anything left in its cgroup?
-- For a run stopped for good (its instance no longer wanted) the question
-- is asked with rmdir: an empty cgroup goes at once, which saves reading
-- cgroup.events now and the rmdir when the instance is stopped; a
-- populated one fails (EBUSY) and is asked the usual way: also when the
-- stop signal reached an escapee, which has most often ended by the time
-- its main process's exit is handled (in a stop of 100 services with one
-- each, 60-80 had; a failed rmdir costs less than a read of cgroup.events
-- before each). Not for a frozen cgroup (thawed at the run's end) nor one
-- whose OOM kills the run's end still reads (a memory limit), nor in a stop
-- of many, which removes its cgroups at its end (M.defer_removals).
function M.left(inst, run)
  local cg = run.cgroup
  if cg == nil then return false end
  local S = inst.sup
  if run.user_stop and not inst.want and not inst.frozen and not memory_limited(inst)
     and not later_of[inst] and S.cgroups and S.cgroups[cg] and cg:remove() then
    removed(S, cg)
    return false
  end
  return M.populated(run)
end

--- A restart spawned at the end of `run` (the instance's exit action,
-- before the run's end is recorded) goes into the run's own cgroup when the
-- run's end will keep it for the instance (its part's closer, park): seen
-- empty after the main process ended (cgroup.left, just before), not
-- emptied by cgroup.kill, and without OOM kills to read first (no memory
-- limit). Its CPU base is read now, before anything of the new process
-- runs in it (M.prepare takes it). True when it may.
function M.reuse(inst, run)
  local cg, S = run.cgroup, inst.sup
  if not (cg and empty[cg] and S.cgroups and S.cgroups[cg]) or owner[cg] ~= inst or inst.cgroup_idle ~= nil
     or killed[cg] or memory_limited(inst) then
    return false
  end
  read_base[cg] = cg:usage("cpu") or false
  return true
end

--- The main process ended, but processes are left in the run's cgroup (an
-- escapee of a crashed service, what a stop signal spared): they get the
-- service's stop sequence (stop signal, stop.timeout, cgroup.kill,
-- stop.kill_timeout), in a task that is a part of the run. During a stop
-- whose signal went to the whole cgroup (stop.group) that sequence is the
-- stop's own, under way in its task: the drain only waits for the cgroup
-- to empty, so each process left has the stop's time to end (an escapee
-- that ignores the signal gets cgroup.kill at the stop's timeout); a stop
-- that signalled the main process alone (stop.group = false) kills the
-- rest at once. done() is called once the cgroup is empty, or once nothing
-- more can be done: a restart never spawns beside a process of the
-- previous run.
local function drain_alone(inst, run, done)
  local cg, st = run.cgroup, inst.cfg.stop
  -- (With the supervisor's own budget, as the stop: done() ends the run.)
  run:own("drain", inst.sup.own_budget(orch.task(function()
    local function say(why) inst:log("cannot wait for its cgroup to empty (%s): reading it every 0.1s", why) end
    -- Frozen processes would take the stop signal only once thawed: a
    -- frozen service's main process killed from outside left its others
    -- frozen, and they sat out the whole stop timeout.
    if inst.frozen then M.freeze(run, false) end
    if run.stopping and st.group then
      -- The stop's task ends the run if even cgroup.kill leaves something
      -- (this task goes with it).
      wait_empty(cg, nil, say)
      empty[cg] = true
      run:drop("drain")
      return done()
    end
    if not run.stopping and st.signal ~= "KILL" and st.signal ~= 9 then
      inst:log("%d process(es) left in its cgroup after the main process ended: sending %s",
        #(cg:procs() or {}), tostring(st.signal))
      cg:kill(st.signal)
      if not wait_empty(cg, st.timeout, say) then
        inst:log("still %d process(es) in its cgroup %gs after %s: sending KILL", #(cg:procs() or {}),
          st.timeout, tostring(st.signal))
      end
    end
    if cg:populated() then
      killed[cg] = true
      cg:kill()
      if not wait_empty(cg, st.kill_timeout, say) then
        inst:log("its cgroup still holds %s %gs after KILL: left behind", table.concat(cg:procs() or {}, " "),
          st.kill_timeout)
      end
    end
    run:drop("drain")     -- this task: not cancelled, only forgotten
    done()
  end)), Run.cancel_task)
end

-- How long the runs of a stop of many wait together (below) for the
-- supervisor's parent cgroup to empty before each waits for its own: what
-- keeps the parent populated then is not the stop's (a process of another
-- program in a parent given by sup.configure{ cgroup = ... }, one that
-- survived KILL) or ends late (an escapee that takes its time on the stop
-- signal, a loaded machine).
local TOGETHER_FOR = 0.25
-- Completions a turn: each resume of the task stays short (the Lua time
-- budget counts from a resume).
local TOGETHER_TURN = 16

-- A run waiting together is its part "drain" until it is done; the closer
-- (the run ended otherwise: its stop's KILL left something behind) takes it
-- off the list.
local function apart(e) e.w.pending[e] = nil end

local function together(S, w)
  while next(w.pending) do
    -- (No parent: the supervisor was closed meanwhile; each run then waits
    -- for its own.)
    local base = S.cgroup_base
    local all = base ~= nil and wait_empty(base, TOGETHER_FOR)
    local list = w.pending
    w.pending = {}
    local n = 0
    for e in pairs(list) do
      local run = e.run
      if run.drain == e then
        run:drop("drain")
        -- (A cgroup no longer the supervisor's was removed: sup.close.)
        if all or not (S.cgroups and S.cgroups[run.cgroup]) or not M.populated(run) then
          empty[run.cgroup] = true
          -- One run's failure ends its own completion, not the others'
          -- (the Lua time budget's error among them: the yield after it
          -- starts the budget afresh).
          local ok, err = pcall(e.done)
          if not ok then
            S:log("a stop's drain of " .. e.inst.name .. " failed: " .. tostring(err))
            n = TOGETHER_TURN - 1
          end
        else
          drain_alone(e.inst, run, e.done)
        end
        n = n + 1
        if n >= TOGETHER_TURN then
          n = 0
          orch.sleep(0)
        end
      end
    end
  end
  w.task = nil
end

--- After the main process ended, with processes left in the run's cgroup
-- (see drain_alone). In a stop of many that ends every run of the
-- supervisor (M.drain_together), a run stopping with its whole cgroup
-- signalled does not wait for its own cgroup: the runs left waiting then
-- share one wait for the parent cgroup to empty (one task, one watch of
-- the parent's cgroup.events), and are done together once it is, or each
-- waits for its own after TOGETHER_FOR. An escapee of each of 100 services
-- made up to 60-90 waits a stop of all, each a task with a cgroup.events
-- of its own opened, polled, read and closed (20-30 us of orch's CPU).
function M.drain(inst, run, done)
  local w = inst.sup.drain_wait
  if not (w and run.stopping and inst.cfg.stop.group) then return drain_alone(inst, run, done) end
  if inst.frozen then M.freeze(run, false) end
  local e = { w = w, run = run, inst = inst, done = done }
  w.pending[e] = true
  run:own("drain", e, apart)
  -- (Its completions end runs: the supervisor's own budget, as the stop's.)
  if not w.task then w.task = inst.sup.own_budget(orch.task(together, inst.sup, w)) end
end

-- The end of the stop that made it: no run waits together any more.
local together_end = { __close = function(w)
  if w.S.drain_wait == w then w.S.drain_wait = nil end
end }

--- A stop of many whose instances hold every live run of the supervisor
-- (graph.stop_ordered: a stop of all, `all` when insts is the supervisor's
-- whole list, or the last layer of one): until the value returned
-- (to-be-closed) is closed, the drains of stopping runs wait together
-- (M.drain). Nothing (nil) for one instance, without cgroups, or where a
-- live run is not in insts: its processes would keep the parent populated
-- (a layer's stop ends before the next layer's begins).
function M.drain_together(S, insts, all)
  if #insts < 2 or not S.cgroup_base or S.drain_wait then return nil end
  if not all then
    local n = 0
    for _, inst in ipairs(insts) do
      local run = inst.run
      if run and run.alive then n = n + 1 end
    end
    for _, inst in ipairs(S:all_instances()) do
      local run = inst.run
      if run and run.alive then n = n - 1 end
    end
    if n < 0 then return nil end
  end
  local w = setmetatable({ S = S, pending = {} }, together_end)
  S.drain_wait = w
  return w
end

--- Waits (a run part) until the run's cgroup is empty, then calls fn().
function M.watch_empty(run, fn)
  local cg = run.cgroup
  run:own("empty_watch", orch.task(function()
    wait_empty(cg)
    empty[cg] = true
    fn()
  end), Run.cancel_task)
end

-- (Multiplied, not 1024 ^ 2: Lua's `^` is libm's pow, kept out of memory.)
local MIB, GIB = 1024.0 * 1024, 1024.0 * 1024 * 1024
local function human(n)
  if n >= GIB and n % GIB == 0 then return string.format("%dG", n // GIB) end
  if n >= MIB and n % MIB == 0 then return string.format("%dM", n // MIB) end
  if n >= 1024 and n % 1024 == 0 then return string.format("%dK", n // 1024) end
  return tostring(n)
end

--- The exit reason an OOM kill inside the run's cgroup gives, or nil
-- (looked at for services with a memory limit).
function M.oom_reason(inst, run)
  local cg = run.cgroup
  if not cg or not memory_limited(inst) then return nil end
  local st = cg:stat()
  local since = base_of[run] and base_of[run].oom_kill or 0
  if not st or not st.oom_kill or st.oom_kill <= since then return nil end
  local max = st.memory_max
  return "killed by the OOM killer" .. ((max and max ~= math.huge) and (" at memory.max " .. human(max)) or "")
end

--- At the end of a run: the OOM kills inside its cgroup (a worker the
-- kernel killed counts as well as the main process) join the instance's
-- count, status's oom_kills. Services with a memory limit only: where the
-- kernel counts them on every host (memory.events, or v1's oom_control).
function M.end_run(inst, run)
  local cg = run.cgroup
  if not cg or not memory_limited(inst) then return end
  local st = cg:stat()
  local n = st and st.oom_kill
  inst.oom_kills = (inst.oom_kills or 0) + (n and n - (base_of[run] and base_of[run].oom_kill or 0) or 0)
end

--- What a status shows of the run's cgroup: true, cpu (seconds), memory
-- (bytes), tasks, OOM kills; nothing without a cgroup or its stat files.
-- into: a table cg:stat fills (the caller's scratch).
function M.account(run, into)
  local cg = run.cgroup
  local st = cg and cg:stat(into)
  if not st then return end
  -- This run's share of a kept cgroup's totals.
  local b = base_of[run]
  local cpu, oom = st.cpu, st.oom_kill
  if b then
    cpu = cpu and cpu - (b.cpu or 0)
    oom = oom and oom - (b.oom_kill or 0)
  end
  return true, cpu, st.memory_current, st.pids_current, oom
end

--- Whole-cgroup accounting for a status table (run: the live run, if any;
-- read: true when the rest is what M.account(run) said, which the caller
-- keeps a while).
function M.status(inst, run, t, read, cpu, memory, tasks, oom_kill)
  local cg, c, m, n, oom, ctls = M.figures(inst, run, read, cpu, memory, tasks, oom_kill)
  t.oom_kills, t.cgroup, t.memory, t.tasks, t.cgroup_controllers = oom, cg and cg:path(), m, n, ctls
  if c ~= nil then t.cpu = c end
end

--- The same as values, for a status rendered without a table: the
-- cgroup (its path is the status's), cpu, memory, tasks (nil unless read), the OOM kills, and
-- for a service with cgroup limits where its controllers are
-- (cg:controllers(): a mixed host has some in v2, others in v1 only).
function M.figures(inst, run, read, cpu, memory, tasks, oom_kill)
  local oom = inst.oom_kills
  local cg = run and run.cgroup
  if not cg then return nil, nil, nil, nil, oom end
  local ctls = cgroup_limits(inst.cfg.limits) and cg:controllers() or nil
  if not read then return cg, nil, nil, nil, oom, ctls end
  if memory_limited(inst) then oom = (inst.oom_kills or 0) + (oom_kill or 0) end
  return cg, cpu, memory, tasks, oom, ctls
end

--- For the limits rule: { rss = memory of the whole cgroup, cpu = its CPU
-- seconds }, or nil without a cgroup, or without the memory accounting the
-- rss rule (need_rss) reads (the caller samples /proc then).
function M.sample(run, need_rss)
  local cpu, memory = M.usage(run)
  if not cpu or (need_rss and not memory) then return nil end
  return { rss = memory, cpu = cpu }
end

--- The run's CPU seconds (its share of a kept cgroup's) and its cgroup's
-- memory bytes, read with cg:usage (two files through held fds, no table):
-- the cheap read of /metrics and the limits rule. nil without a cgroup or
-- its cpu.stat; memory nil without memory accounting.
function M.usage(run)
  local cg = run.cgroup
  if not cg then return nil end
  local cpu, memory = cg:usage()
  if not cpu then return nil end
  local b = base_of[run]
  if b and b.cpu then cpu = cpu - b.cpu end
  return cpu, memory
end

--- Freezes (true) or thaws (false) the run's cgroup.
function M.freeze(run, on)
  local cg = run and run.cgroup
  if not cg then return nil, "no cgroup (cgroups are off, or the service is not running)", "ENOTSUP" end
  if on then return cg:freeze() end
  return cg:thaw()
end

--- The end of the supervisor (sup.close, the end of a shutdown): every
-- cgroup it made is emptied (cgroup.kill) and removed, the parent last. In
-- a task it waits (up to 5 s each) for the killed processes to be gone,
-- and stops what else is in orch's own tree; else what is still dying
-- keeps its (empty, then) directory.
function M.close(S)
  if S.cgroup_guard then S.cgroup_guard.path = nil end
  if S.cgroup_warm then S.cgroup_warm:stop() end
  S.cgroup_warm, S.cgroup_cold = nil, nil
  local base = S.cgroup_base
  if not base and S.main and S.cgroup_parent == nil and not S.cgroup_off then
    -- An orch that only adopted (after a SIGKILL of the previous one) never
    -- made the tree, but it is its own to remove.
    base = orch.cgroup.open(default_path(S), TRUSTED)
  end
  if not base then return end
  S.cgroup_base = nil
  local waits = orch.current() ~= nil
  for cg in pairs(S.cgroups or {}) do
    if cg:populated() then
      cg:kill()
      if waits then cg:wait_empty(5) end
    end
  end
  -- What is still in orch's own tree (named after its control socket, or
  -- orch.<pid>; not a parent given by sup.configure{ cgroup }) once every
  -- run's cgroup was emptied is no run's: what a previous orch of the
  -- socket left that this one had not taken over yet (a shutdown while the
  -- take-over waited for fds ended orch and left it running, unsupervised),
  -- or a process put there from outside. The next orch's sweep would kill
  -- it; the shutdown stops it, as a dropped service: TERM, then KILL.
  if waits and S.main and S.cgroup_parent == nil and base:populated() then
    -- (A run's process that outlived KILL, waited for above, is not one.)
    local known = {}
    for cg in pairs(S.cgroups or {}) do
      for _, pid in ipairs(cg:procs() or {}) do known[pid] = true end
    end
    local listed, pids = base:procs(), {}
    for _, pid in ipairs(listed or {}) do
      if not known[pid] then pids[#pids + 1] = pid end
    end
    if #pids > 0 or not listed then
      S:log(string.format("stopping what is left in orch's cgroup tree %s (no service's run): %s", base:dir(),
        #pids > 0 and table.concat(pids, " ") or "(not listed)"))
      local function say(why) S:log("cannot wait for orch's cgroup tree to empty (" .. why .. "): reading it every 0.1s") end
      -- (A TERM that reached nothing is no reason to wait: KILL at once,
      -- one write to cgroup.kill; so with a run's process stuck in the
      -- tree. One that reached some of it, not all (a process it could
      -- not pin), is waited for as any, and KILL follows.)
      local n, kerr, _, sent
      if not next(known) then n, kerr, _, sent = base:kill(DROP_STOP.signal) end
      if kerr then
        S:log("orch's cgroup tree: " .. DROP_STOP.signal .. " not sent to every process (" .. tostring(kerr) .. "): "
          .. ((sent or 0) > 0 and "KILL after " .. DROP_STOP.timeout .. " s" or "sending KILL"))
      end
      n = n or sent
      if not (n and n > 0 and wait_empty(base, DROP_STOP.timeout, say)) then
        base:kill()
        wait_empty(base, next(known) and 0.5 or DROP_STOP.kill_timeout, say)
      end
    end
  end
  S.cgroups = S.cgroups or {}
  for cg in pairs(S.cgroups) do
    if cg:remove() then
      S.cgroups[cg] = nil
      cg:close()
    end
  end
  if next(S.cgroups) == nil then
    remove_base(S, base)
  else
    -- Processes still dying (no task to wait in): the last retire task
    -- removes the parent.
    S.cgroup_closing = base
  end
end

return M
