-- Scheduler jobs through the control socket: `orch ctl status` lists them
-- (type, state, next run, last result, runs), `trigger`, `pause` and
-- `resume` act on them. A real `orch run` with a supervisor and jobs.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"

local POLICY = [[
local sup = require "orch.supervisor"
local sched = require "orch.scheduler"
sup.configure{ log = false }
sup.service{ name = "db", cmd = { "sleep", "1000" } }
sched.every(0.1, { "sh", "-c", "exit 2" }, { name = "tick", mode = "rate", log = function() end })
sched.cron("0 3 * * *", { "true" }, { name = "nightly", log = function() end })
sup.run()
]]

describe("orch ctl and scheduler jobs", function()
  local o
  setup(function() o = u.start(POLICY) end)
  teardown(function() if o then u.stop(o) end end)

  local function jobs()
    local code, out, err = u.ctl_cli(o, "--json", "status")
    assert.are.equal(0, code, err)
    local by = {}
    for _, j in ipairs(cjson.decode(out).jobs or {}) do by[j.name] = j end
    return by
  end

  it("status lists the jobs: type, state, next run, last result, runs", function()
    u.until_true(function() local j = jobs().tick return j and j.runs >= 1 and j.last_code end, "tick ran")
    local code, out, err = u.ctl_cli(o, "status")
    assert.are.equal(0, code, err)
    assert.matches("\n\nJOB%s+TYPE%s+STATE%s+NEXT RUN%s+LAST RESULT%s+RUNS\n", out)
    assert.matches("\ntick%s+every 0%.1 s %(rate%)%s+%a+%s+%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ%s+exit 2 %(", out)
    assert.matches("\nnightly%s+cron 0 3 %* %* %*%s+waiting%s+%d%d%d%d%-%d%d%-%d%dT%d%d:00:00Z%s+%-%s+0\n", out)
    local j = jobs().nightly
    assert.are.equal("cron 0 3 * * *", j.type)
    assert.is_true(j.next_run > os.time())
  end)

  it("pause stops the runs (their starts are skipped), resume brings them back", function()
    local code, out = u.ctl_cli(o, "pause", "tick")
    assert.are.same({ 0, "tick: paused\n" }, { code, out })
    local j0 = jobs().tick
    assert.is_true(j0.paused)
    -- Starts fall due while paused: skipped, not run.
    local j1 = u.until_true(function() local j = jobs().tick return j.skipped >= j0.skipped + 2 and j end,
      "skipped starts while paused")
    assert.are.equal(j0.runs, j1.runs)
    assert.are.equal(0, (u.ctl_cli(o, "resume", "tick")))
    u.until_true(function() return jobs().tick.runs > j1.runs end, "runs again after resume")
  end)

  it("trigger runs a job now; an unknown job is an error", function()
    local code, out = u.ctl_cli(o, "trigger", "nightly")
    assert.are.same({ 0, "nightly: triggered\n" }, { code, out })
    local j = u.until_true(function() local x = jobs().nightly return x.runs == 1 and x.last_code and x end,
      "the triggered run ends")
    assert.are.equal(0, j.last_code)
    local err
    code, _, err = u.ctl_cli(o, "trigger", "nosuch")
    assert.are.equal(1, code)
    assert.matches("orch ctl: nosuch: job: no such job 'nosuch'", err, 1, true)
  end)
end)
