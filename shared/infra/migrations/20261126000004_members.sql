-- Company settings and domains, and the team members the normalizer keeps.
create table tenancy.tenant_domains (
    tenant_id   uuid not null references tenancy.tenants (id) on delete cascade,
    domain      text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, domain)
);
insert into tenancy.tenant_domains (tenant_id, domain) select id, lower(primary_domain) from tenancy.tenants;

create table tenancy.tenant_settings (
    tenant_id         uuid primary key references tenancy.tenants (id) on delete cascade,
    default_timezone  text not null default 'UTC',
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
insert into tenancy.tenant_settings (tenant_id) select id from tenancy.tenants;

create schema if not exists members;

-- One row per SCIM user ever seen; never deleted. `profile` holds the normalized fields (and
-- the raw values next to them); the columns are what other workers look members up by.
create table members.members (
    tenant_id          uuid not null references tenancy.tenants (id) on delete cascade,
    scim_user_id       uuid not null,
    status             text not null check (status in ('active', 'deactivated', 'skipped')),
    skip_reason        text,
    profile            jsonb not null,
    primary_email      text,
    manager_scim_id    text,
    manager_email      text,
    manager_full_name  text,
    imported_at        timestamptz,
    deactivated_at     timestamptz,
    version            bigint not null default 1,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    primary key (tenant_id, scim_user_id)
);
create index members_primary_email on members.members (tenant_id, lower(primary_email));
create index members_status on members.members (tenant_id, status);

-- What happened to whom, when and why: the admin's provisioning log.
create table members.provisioning_log (
    id            bigserial primary key,
    tenant_id     uuid not null,
    scim_user_id  uuid not null,
    action        text not null,
    detail        text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
create index provisioning_log_tenant on members.provisioning_log (tenant_id, id desc);
