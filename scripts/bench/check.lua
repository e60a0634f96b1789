-- wrk script for GET /api/check over many activated (token, hwid) pairs. Usage:
--   wrk -s check.lua http://127.0.0.1:PORT -- PAIRS_FILE [nonce]
-- PAIRS_FILE holds one "TOKEN HWID" per line (the runner writes it, shuffled). Each wrk thread
-- formats every request once in init() and then cycles through them from its own starting
-- point, so the lookups spread over all the activated keys and cost wrk one table index each.
-- With "nonce", every request carries a new nonce instead, so the server signs a fresh receipt
-- each time (requests are then formatted per call).
local started = 0

function setup(thread)
  thread:set("thread_number", started)
  started = started + 1
end

function init(args)
  paths, requests = {}, {}
  for line in io.lines(args[1]) do
    local token, hwid = line:match("^(%S+)%s+(%S+)$")
    if token then
      paths[#paths + 1] = "/api/check?token=" .. token .. "&hwid=" .. hwid
      requests[#requests + 1] = wrk.format("GET", paths[#paths])
    end
  end
  if #requests == 0 then error("check.lua: no TOKEN HWID lines in " .. args[1]) end
  with_nonce = args[2] == "nonce"
  counter = 0
  -- Threads start far apart in the cycle (7919 is prime, so any count of pairs is spread).
  position = (thread_number * 7919) % #requests
end

function request()
  position = position % #requests + 1
  if with_nonce then
    counter = counter + 1
    return wrk.format("GET", paths[position] .. "&nonce=t" .. thread_number .. "-" .. counter)
  end
  return requests[position]
end
