-- Seeds :count Entra-shaped users (phones in the documented forms, addresses in several
-- countries, locales, manager e-mails) into tenant :tenant and queues one scim.user.upserted
-- event per user in the outbox, as the ingress would have: a backlog for the normalizer.
--   psql "$DATABASE_URL" -v tenant=<tenant id> -v count=50000 -f bench/seed_user_events.sql
with forms as (
    select array['(865) 365-1900', '(212) 575-1994 ext 3437', '(317) 251-0700 ext. 468', '(202) 903-2585 x2991',
                 '(206) 324-1800 x 229', '540.946.4600 Ext. 143', '+44 20 7946 0958', '+49 30 901820'] as phones,
           array['United States', 'US', 'USA', 'Canada', 'Australia', 'Germany', 'Brazil', 'Mexico'] as countries,
           array['California', 'NY', 'texas', 'Ontario', 'NSW', 'Bavaria', 'SP', 'Jalisco'] as regions,
           array['en-US', 'en_US', 'fr-CA', 'en-AU', 'de-DE', 'pt-BR', 'es-MX', 'he-IL'] as locales
)
insert into scim.users (tenant_id, id, user_name, external_id, active, resource, version)
select :'tenant'::uuid, gen_random_uuid(), 'member' || g || '@contoso.com', 'ext-' || g, true,
       jsonb_build_object(
           'schemas', jsonb_build_array('urn:ietf:params:scim:schemas:core:2.0:User',
                                        'urn:ietf:params:scim:schemas:extension:muster:2.0:User'),
           'userName', 'member' || g || '@contoso.com',
           'active', true,
           'displayName', 'Member ' || g,
           'title', 'Engineer',
           'name', jsonb_build_object('givenName', 'Member', 'familyName', g::text),
           'emails', jsonb_build_array(jsonb_build_object('primary', true, 'type', 'work', 'value', 'member' || g || '@contoso.com')),
           'phoneNumbers', jsonb_build_array(jsonb_build_object('type', 'work', 'value', f.phones[1 + g % 8])),
           'addresses', jsonb_build_array(jsonb_build_object('type', 'work', 'country', f.countries[1 + g % 8], 'region', f.regions[1 + g % 8])),
           'locale', f.locales[1 + g % 8],
           'urn:ietf:params:scim:schemas:extension:muster:2.0:User', jsonb_build_object('managerEmail', 'member' || (g / 10) || '@contoso.com')),
       1
from generate_series(1, :count) as g, forms f;

with events as (
    select gen_random_uuid() as event_id, u.tenant_id, u.id, u.version from scim.users u where u.tenant_id = :'tenant'::uuid
)
insert into scim.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope)
select e.event_id, e.tenant_id, 'scim.user.upserted', e.id::text, e.version,
       jsonb_build_object('event_id', e.event_id, 'tenant_id', e.tenant_id, 'kind', 'scim.user.upserted',
                          'entity_id', e.id::text, 'version', e.version,
                          'occurred_at', to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
from events e;
analyze scim.users;
