--- orch.heartbeat: `require "orch.heartbeat"` returns `orch.heartbeat`, the
-- heartbeat table's client and reader API (see doc/heartbeat.md). The verbs
-- are implemented in C (src/l_heartbeat.c); lua/orch/heartbeat_layer.lua
-- adds the waiting variant of from_env.
return require("orch").heartbeat
