-- wrk script for POST /api/activate, every request a machine never seen before. Usage:
--   wrk -s activate.lua http://127.0.0.1:PORT/api/activate -- TOKEN RUN ACK_DIR
-- TOKEN is an unlimited key (-1), so every request takes a new seat. The hwid is
-- "bench-RUN-THREAD-COUNTER", unique across threads and, with a new RUN each time, across runs.
-- For every 201 the thread writes the hwid that the server signed into the receipt to
-- ACK_DIR/acked-RUN-THREAD.txt, so that the runner can check afterwards that each acknowledged
-- activation is in the database.
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_number", #threads)
end

-- base64url → bytes, for the receipt's payload (LuaJIT 2.1 / Lua 5.1 have no decoder).
local digit = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  for i = 1, #alphabet do digit[alphabet:byte(i)] = i - 1 end
end

local function base64url_decode(text)
  local out, bits, count = {}, 0, 0
  for i = 1, #text do
    bits = bits * 64 + digit[text:byte(i)]
    count = count + 6
    if count >= 8 then
      count = count - 8
      local byte = math.floor(bits / 2 ^ count)
      out[#out + 1] = string.char(byte)
      bits = bits - byte * 2 ^ count
    end
  end
  return table.concat(out)
end

function init(args)
  token, run = args[1], args[2]
  acked = io.open(args[3] .. "/acked-" .. run .. "-" .. thread_number .. ".txt", "w")
  counter, created, failed, unreadable = 0, 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  counter = counter + 1
  local hwid = "bench-" .. run .. "-" .. thread_number .. "-" .. counter
  return wrk.format(nil, nil, nil, "token=" .. token .. "&hwid=" .. hwid .. "&machine=BENCH-PC&user=bench")
end

function response(status, headers, body)
  if status ~= 201 then
    failed = failed + 1
    return
  end
  created = created + 1
  local payload = body:match('"receipt":"[%w_-]+%.([%w_-]+)%.')
  local hwid = payload and base64url_decode(payload):match('"hwid":"([^"]*)"')
  if hwid then
    acked:write(hwid, "\n")
  else
    unreadable = unreadable + 1
  end
  -- Flushed as it goes: wrk ends without closing the threads' Lua states.
  acked:flush()
end

function done(summary, latency, requests)
  local totals = { created = 0, failed = 0, unreadable = 0 }
  for _, thread in ipairs(threads) do
    for name in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
  end
  io.write(string.format("activate.lua: created %d failed %d unreadable %d\n", totals.created, totals.failed, totals.unreadable))
end
