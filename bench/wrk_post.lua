-- wrk script for the benchmark: every request is the same POST, its JSON body and bearer key
-- taken from the environment (BENCH_BODY, BENCH_AUTH) so one committed script serves all targets.
-- No response() hook on purpose: defining one makes wrk parse every reply and slows it down;
-- failures show up in wrk's own "Non-2xx or 3xx responses" line.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"sim-gpt","messages":[{"role":"user","content":"Hello there"}]}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
