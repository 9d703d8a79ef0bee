-- wrk: PUT /v1/variables/bench/kN to a Teal node (Docs/API.md, "Variables"), as `teal var put` does:
-- bearer token, JSON body, a new Idempotency-Key per request. Arguments (after --): the token, the
-- number of distinct keys (default 1000), the value size in bytes (default 128), and "nokey" to send
-- no Idempotency-Key (the node then records nothing in its idempotency table).
dofile(string.gsub(debug.getinfo(1, "S").source, "^@(.*/)[^/]*$", "%1") .. "put_common.lua")

local counter = 0

function init(args)
  token = args[1] or error("teal_put.lua: the API token is the first argument")
  keys = tonumber(args[2] or "1000")
  body = '{"value":"' .. string.rep("v", tonumber(args[3] or "128")) .. '"}'
  prefix = string.format("wrk-%d-%d-%d", id, os.time(), math.random(1, 1000000000))
  headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  keyed = args[4] ~= "nokey"
end

function request()
  counter = counter + 1
  if keyed then headers["Idempotency-Key"] = prefix .. "-" .. counter end
  return wrk.format("PUT", "/v1/variables/bench/k" .. (counter % keys), headers, body)
end
