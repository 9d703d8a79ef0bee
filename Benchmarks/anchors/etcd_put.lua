-- wrk: etcd v3 put through its JSON gateway (POST /v3/kv/put, key and value base64), the same key
-- space and value size as teal_put.lua. Arguments (after --): the number of distinct keys (default
-- 1000), the value size in bytes (default 128).
dofile(string.gsub(debug.getinfo(1, "S").source, "^@(.*/)[^/]*$", "%1") .. "put_common.lua")

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(text)
  local out = {}
  for i = 1, #text, 3 do
    local a, b, c = text:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 4 - (3 - (#text - i + 1 >= 3 and 3 or #text - i + 1))
    for k = 1, 4 do
      if k <= chars then
        local index = math.floor(n / 64 ^ (4 - k)) % 64
        out[#out + 1] = alphabet:sub(index + 1, index + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end

local counter = 0

function init(args)
  keys = tonumber(args[1] or "1000")
  local value = base64(string.rep("v", tonumber(args[2] or "128")))
  bodies = {}
  for k = 0, keys - 1 do
    bodies[k] = '{"key":"' .. base64("bench/k" .. k) .. '","value":"' .. value .. '"}'
  end
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v3/kv/put", headers, bodies[counter % keys])
end
