-- wrk script for bench/http: cycles the request path through /w/0 .. /w/(WORKERS-1), one worker
-- after another, so the load is spread round-robin over every worker of bench/multi/generate.
-- Requests are formatted once up front so the client spends no extra time per request.
local n = tonumber(os.getenv("WORKERS") or "1000")
local requests = {}
for k = 0, n - 1 do
  requests[k] = wrk.format("GET", "/w/" .. k)
end
local next_worker = 0

request = function()
  local r = requests[next_worker]
  next_worker = (next_worker + 1) % n
  return r
end
