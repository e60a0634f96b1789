-- wrk script for an authenticated JSON PUT. Usage:
--   wrk -s put-json.lua http://127.0.0.1:PORT/rpc/query -- TOKEN
-- The request is built once in init() and replayed, so the script costs wrk nothing per request.
function init(args)
  wrk.method = "PUT"
  wrk.body = '{"junk":"junk"}'
  wrk.headers["Content-Type"] = "application/json"
  if args[1] ~= nil and args[1] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[1]
  end
end
