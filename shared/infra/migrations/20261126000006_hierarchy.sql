create schema if not exists hierarchy;

-- The hierarchy worker's view of every member: its keys as a possible manager (SCIM id,
-- e-mail, folded "firstname lastname"), its references to its own manager, and the link that
-- came of them. Only the hierarchy worker writes here, one transaction at a time per company.
create table hierarchy.nodes (
    tenant_id       uuid not null references tenancy.tenants (id) on delete cascade,
    scim_user_id    uuid not null,
    member_status   text not null,
    -- active or deactivated members can be someone's manager; skipped ones cannot.
    candidate       boolean not null,
    email_key       text,
    name_key        text,
    ref_id          text,
    ref_email       text,
    ref_name        text,
    ref_manual      boolean not null default false,
    manager_id      uuid,
    resolution      text not null default 'none'
                    check (resolution in ('resolved', 'pending', 'ambiguous', 'cycle', 'none')),
    via             text check (via in ('id', 'email', 'name', 'manual')),
    detail          text,
    candidates      uuid[],
    cycle_path      uuid[],
    -- Bumped whenever manager_id changes: the version of `member.placed`.
    link_version    bigint not null default 0,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, scim_user_id)
);
-- Direct reports, and whether a member has any (only then can a new link close a cycle).
create index nodes_reports on hierarchy.nodes (tenant_id, manager_id) where manager_id is not null;
-- Possible managers by e-mail and by name.
create index nodes_email on hierarchy.nodes (tenant_id, email_key) where candidate;
create index nodes_name on hierarchy.nodes (tenant_id, name_key) where candidate;
-- Who waits for (or was linked through) a key: looked up when a member with that key changes.
create index nodes_ref_id on hierarchy.nodes (tenant_id, ref_id) where ref_id is not null;
create index nodes_ref_email on hierarchy.nodes (tenant_id, ref_email) where ref_email is not null;
create index nodes_ref_name on hierarchy.nodes (tenant_id, ref_name) where ref_name is not null;
-- Refused links to look at again when a member on their path moves (they are few).
create index nodes_cycles on hierarchy.nodes (tenant_id) where resolution = 'cycle';
