-- wrk script: sustained `POST /Users` of new, unique users (Entra ID's initial sync).
--   TOKEN=… wrk -t2 -c8 -d30s --latency -s bench/create_users.lua http://127.0.0.1:8080
local token = os.getenv("TOKEN")
local counter = 0
local thread_id = 0
local run = tostring(os.time())
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
request = function()
  counter = counter + 1
  local name = "new-" .. run .. "-" .. tid .. "-" .. counter .. "@contoso.com"
  local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"' .. name ..
      '","active":true,"name":{"givenName":"New","familyName":"User"},"emails":[{"primary":true,"type":"work","value":"' ..
      name .. '"}]}'
  return wrk.format("POST", "/scim/v2/Users", { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/scim+json" }, body)
end
