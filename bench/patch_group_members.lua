-- wrk script: membership PATCHes of MEMBERS users each, as Entra ID sends them, alternately
-- adding and removing the same members (so every request is a real delta of that size).
-- Each wrk connection works on its own group (GROUP_IDS, comma-separated ids) so that the
-- figure is the cost of a PATCH, not of waiting for another PATCH's row lock.
--   TOKEN=… GROUP_IDS=<id>,<id> MEMBER_FILE=/tmp/members.txt wrk -t2 -c2 -d30s --latency -s bench/patch_group_members.lua http://127.0.0.1:8080
local token = os.getenv("TOKEN")
local groups = {}
for id in string.gmatch(os.getenv("GROUP_IDS"), "[^,]+") do table.insert(groups, id) end
local values = {}
for line in io.lines(os.getenv("MEMBER_FILE")) do
  table.insert(values, '{"value":"' .. line .. '"}')
end
local members = "[" .. table.concat(values, ",") .. "]"
local function body(op)
  return '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"' .. op ..
      '","path":"members","value":' .. members .. '}]}'
end
local add, remove = body("Add"), body("Remove")
local next_group = 0
setup = function(thread)
  next_group = next_group + 1
  thread:set("group", groups[(next_group - 1) % #groups + 1])
end
local i = 0
request = function()
  i = i + 1
  local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/scim+json" }
  return wrk.format("PATCH", "/scim/v2/Groups/" .. group, headers, (i % 2 == 1) and add or remove)
end
response = function(status)
  if status ~= 204 then io.stderr:write("unexpected status " .. status .. "\n") end
end
