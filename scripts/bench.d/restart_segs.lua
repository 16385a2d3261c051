-- scripts/bench.d/restart_segs.lua: the points of one restart in a perf
-- trace, for restart_segments.sh and restart_tail.lua (µs after the probe's
-- SIGKILL): the victim's exit (sched_process_exit), the SIGCHLD to the
-- supervisor, the supervisor's first switch-in after the exit began
-- (oncpu), its wait4 returning the victim or, first, orch's waitid that
-- takes the exit without reaping it (reaped), its clone3 (clone) and
-- the new process's own exec (exec; its pid from sched_process_fork).
--   local find = dofile(".../restart_segs.lua")
--   find(ev, j, k, stamp, sup, r) fills r (also r.victim, r.child) from
-- ev (sorted by time; each { t = s, pid = tid, name = "sched:...", a =
-- the fields' text }), starting at index j, for the kill at time k whose
-- new process stamped itself at `stamp` (seconds); sup is the supervisor.
return function(ev, j, k, stamp, sup, r)
  local i = j
  while i <= #ev and ev[i].t <= stamp do
    local e, rel = ev[i], (ev[i].t - k) * 1e6
    local a = e.name
    if a == "signal:signal_generate" and not r.victim and e.a:find("sig=9 ", 1, true) then
      r.victim = tonumber(e.a:match(" pid=(%d+)"))
    elseif r.victim and a == "sched:sched_process_exit" and not r.exit and e.a:find("pid=" .. r.victim .. " ", 1, true) then
      r.exit = rel
    elseif r.exit and not r.sigchld and a == "signal:signal_generate" and e.a:find("sig=17 ", 1, true)
           and e.a:find(" pid=" .. sup .. " ", 1, true) then
      r.sigchld = rel
    elseif r.exit and not r.oncpu and a == "sched:sched_switch" and e.a:find("next_pid=" .. sup .. " ", 1, true) then
      r.oncpu = rel
    elseif r.victim and not r.reaped and a == "syscalls:sys_exit_wait4" and tonumber(e.a:match("(0x%x+)$") or "") == r.victim then
      r.reaped = rel
    elseif r.exit and not r.reaped and a == "syscalls:sys_exit_waitid" and e.pid == sup then
      r.reaped = rel
    elseif r.reaped and not r.clone and a == "syscalls:sys_enter_clone3" then
      r.clone = rel
    elseif r.clone and not r.child and a == "sched:sched_process_fork" then
      r.child = tonumber(e.a:match("child_pid=(%d+)"))
    elseif r.child and not r.exec and a == "sched:sched_process_exec" and e.pid == r.child then
      -- The new process's own exec (not another of the machine's).
      r.exec = rel
    end
    i = i + 1
  end
  return r
end
