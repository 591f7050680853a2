-- wrk script for the benchmark: every request is the same POST, its JSON body and bearer key
-- taken from the environment (BENCH_BODY, BENCH_AUTH) so one committed script serves all targets.
-- BENCH_AUTH may hold several "Bearer ..." values separated by "|": requests then take them in
-- turn (load spread over many accounts, as on a cluster it must be).
-- No response() hook on purpose: defining one makes wrk parse every reply and slows it down;
-- failures show up in wrk's own "Non-2xx or 3xx responses" line.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"sim-gpt","messages":[{"role":"user","content":"Hello there"}]}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH") or ""
local keys = {}
for value in string.gmatch(auth, "[^|]+") do
  table.insert(keys, value)
end
if #keys == 1 then
  wrk.headers["Authorization"] = keys[1]
elseif #keys > 1 then
  local turn = 0
  request = function()
    turn = turn % #keys + 1
    wrk.headers["Authorization"] = keys[turn]
    return wrk.format()
  end
end
