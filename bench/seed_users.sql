-- Seeds :count Entra-shaped users into tenant :tenant directly in PostgreSQL, for read
-- benchmarks that need a large tenant without spending minutes on POSTs.
--   psql "$DATABASE_URL" -v tenant=<tenant id> -v count=100000 -f bench/seed_users.sql
insert into scim.users (tenant_id, id, user_name, external_id, active, resource, version)
select :'tenant'::uuid, gen_random_uuid(), 'user' || g || '@contoso.com', 'ext-' || g, true,
       jsonb_build_object(
           'schemas', jsonb_build_array('urn:ietf:params:scim:schemas:core:2.0:User'),
           'userName', 'user' || g || '@contoso.com',
           'externalId', 'ext-' || g,
           'active', true,
           'displayName', 'User ' || g,
           'name', jsonb_build_object('givenName', 'User', 'familyName', g::text),
           'emails', jsonb_build_array(jsonb_build_object('primary', true, 'type', 'work', 'value', 'user' || g || '@contoso.com'))),
       1
from generate_series(1, :count) as g;
analyze scim.users;
