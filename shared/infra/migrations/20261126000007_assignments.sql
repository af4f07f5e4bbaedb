create schema if not exists assignments;

-- The company's catalogs (seat types, data-capture kinds, workspaces and their permission
-- profiles, and which seat each needs) as one document the admin edits as a whole.
create table assignments.catalogs (
    tenant_id   uuid primary key references tenancy.tenants (id) on delete cascade,
    catalog     jsonb not null,
    version     bigint not null default 1,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

-- Assignments, in the admin's explicit order (lowest position first). Exactly one default
-- assignment per company: it covers members in no assigned group and cannot be deleted.
create table assignments.assignments (
    id           uuid primary key,
    tenant_id    uuid not null references tenancy.tenants (id) on delete cascade,
    name         text not null,
    mode         text not null check (mode in ('manual', 'automatic')),
    position     integer not null,
    is_default   boolean not null default false,
    groups       uuid[] not null default '{}',
    seats        text[] not null default '{}',
    permissions  jsonb not null default '{}',
    capture      jsonb not null default '{}',
    version      bigint not null default 1,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create unique index assignments_name on assignments.assignments (tenant_id, lower(name));
create unique index assignments_default on assignments.assignments (tenant_id) where is_default;
create index assignments_groups on assignments.assignments using gin (groups);

insert into assignments.catalogs (tenant_id, catalog)
select id, '{"seat_types": [], "capture_kinds": [{"key": "web_conferences", "name": "Web conferences"},
             {"key": "telephony", "name": "Telephony"}, {"key": "email", "name": "E-mail"}], "workspaces": []}'
from tenancy.tenants;
insert into assignments.assignments (id, tenant_id, name, mode, position, is_default)
select gen_random_uuid(), id, 'Default', 'automatic', 2147483647, true from tenancy.tenants;
