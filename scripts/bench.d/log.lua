--- Log capture throughput: a service prints N lines of 100 bytes as fast as
-- it can; the supervisor writes them to <dir>/<name>.log through
-- orch.logfile (checked open per batch, writev, exact drop counting). The
-- baseline writes the same lines with a shell redirection (no orch at all).
-- Prints "log_lines_c <rate> lines/s" and "log_lines_orch <rate> lines/s".
--   orch run scripts/bench.d/log.lua [N]
local orch = require "orch"
local sup = require("orch.supervisor").new()

local N = tonumber(arg and arg[1]) or 1000000
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -m 700 " .. dir)
local line = string.rep("x", 99)
local producer = ("yes %s | head -n %d"):format(line, N)

do
  local t0 = orch.now()
  assert(orch.capture { "/bin/sh", "-c", producer .. " > " .. dir .. "/direct.log" })
  local direct = orch.now() - t0

  sup.configure { log = function() end, runtime_dir = dir }
  sup.service { name = "chatty", restart = "never", cmd = { "/bin/sh", "-c", producer },
                log = { dir = dir, max_bytes = 1e12 } }
  t0 = orch.now()
  sup.start("chatty")
  while true do
    local st = sup.status("chatty")[1]
    if st.log_lines >= N or (st.state ~= "running" and st.state ~= "starting" and not st.pid) then break end
    orch.sleep(0.005)
  end
  local via = orch.now() - t0
  local st = sup.status("chatty")[1]
  assert(st.log_lines == N and st.log_dropped == 0, "lines " .. st.log_lines .. " dropped " .. st.log_dropped)
  sup.close()
  print(("log_lines_c %.0f lines/s"):format(N / direct))
  print(("log_lines_orch %.0f lines/s"):format(N / via))
end
os.execute("rm -rf " .. dir)
