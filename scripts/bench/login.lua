-- wrk script for POST /api/auth/login with a correct password. Usage:
--   wrk -s login.lua http://127.0.0.1:PORT/api/auth/login -- USERNAME PASSWORD
-- USERNAME and PASSWORD come from the runner, which also makes them; no JSON escaping is needed.
function init(args)
  wrk.method = "POST"
  wrk.body = '{"username":"' .. args[1] .. '","password":"' .. args[2] .. '"}'
  wrk.headers["Content-Type"] = "application/json"
end
