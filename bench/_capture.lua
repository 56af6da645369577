-- wrk script of bench/capture_rps.py: spreads requests over many rating links.
--
-- wrk -s bench/_capture.lua URL -- METHOD TOKENS OUT THREADS MODE
--   METHOD  GET, or POST (the rating page's own form: auto=1, as its script submits it)
--   TOKENS  a file of rating tokens, one a line
--   OUT     where done() writes the run's numbers as JSON
--   THREADS wrk's -t (each thread takes every THREADS-th token)
--   MODE    "once": take each token at most once, in order (a POST records a first
--           rating); "cycle": go round the tokens from a random place (views)
--
-- Each link is /r/<token>/<score>, scores going round 0..10 (NPS). Statuses are counted,
-- and for a 303 the token in its Location (/r/<token>/comment) is kept, so the
-- benchmark can check each answered POST against the ratings in the database.

local threads = {}
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
  table.insert(threads, thread)
end

function init(args)
  method = args[1]
  out = args[3]
  step = tonumber(args[4])
  mode = args[5]
  tokens = {}
  for line in io.lines(args[2]) do
    tokens[#tokens + 1] = line
  end
  statuses = {}
  answered = {}
  wrapped = 0
  if mode == "once" then
    position = id + 1
  else
    math.randomseed(os.time() + id * 7919)
    position = math.random(1, #tokens)
  end
  if method == "POST" then
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
    body = "auto=1"
  end
end

function request()
  if position > #tokens then
    position = (position - 1) % #tokens + 1
    wrapped = wrapped + 1
  end
  local path = "/r/" .. tokens[position] .. "/" .. (position % 11)
  position = position + step
  return wrk.format(method, path, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 303 then
    local location = headers["Location"] or headers["location"] or ""
    answered[#answered + 1] = location:match("/r/([^/]+)/comment") or "?"
  end
end

function done(summary, latency, requests)
  local counts, tokens_answered, wraps = {}, {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    for _, token in ipairs(thread:get("answered")) do
      tokens_answered[#tokens_answered + 1] = '"' .. token .. '"'
    end
    wraps = wraps + thread:get("wrapped")
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local errors = summary.errors
  local file = io.open(threads[1]:get("out"), "w")
  file:write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
      .. '"wrapped": %d, "statuses": {%s}, "answered": [%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, errors.connect, errors.read, errors.write, errors.timeout, wraps,
    table.concat(parts, ", "), table.concat(tokens_answered, ", ")
  ))
  file:close()
end
