-- wrk script: Entra ID's lookup before each create, `GET /Users?filter=userName eq "…"`,
-- for random users of a seeded tenant (bench/seed_users.sql).
--   TOKEN=… COUNT=100000 wrk -t2 -c8 -d30s --latency -s bench/get_user_by_name.lua http://127.0.0.1:8080
local token = os.getenv("TOKEN")
local count = tonumber(os.getenv("COUNT") or "100000")
math.randomseed(os.time())
request = function()
  local n = math.random(1, count)
  local path = "/scim/v2/Users?filter=userName%20eq%20%22user" .. n .. "%40contoso.com%22"
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end
