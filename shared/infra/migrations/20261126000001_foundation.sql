-- Foundation: tenants and their API tokens, the SCIM mirror (users, groups, memberships as
-- rows) and the transactional outbox the relay drains.

create schema if not exists tenancy;

create table tenancy.tenants (
    id              uuid primary key,
    name            text not null,
    primary_domain  text not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);

-- Tokens are stored only as SHA-256 hashes; `prefix` is the first characters of the
-- plaintext, so an operator can tell tokens apart in `musterctl token list`.
create table tenancy.api_tokens (
    id          uuid primary key,
    tenant_id   uuid not null references tenancy.tenants (id) on delete cascade,
    kind        text not null check (kind in ('scim', 'admin')),
    name        text not null,
    token_hash  bytea not null unique,
    prefix      text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    revoked_at  timestamptz
);
create index api_tokens_tenant on tenancy.api_tokens (tenant_id);

create schema if not exists scim;

-- The SCIM mirror. `resource` is the canonical document (schema spelling, extensions under
-- their URN) without id, meta or members; hot attributes are columns so filters on them use
-- indexes.
create table scim.users (
    tenant_id    uuid not null references tenancy.tenants (id) on delete cascade,
    id           uuid not null,
    user_name    text not null,
    external_id  text,
    active       boolean not null default true,
    resource     jsonb not null,
    version      bigint not null default 1,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (tenant_id, id)
);
-- userName is unique per tenant, compared case-insensitively (RFC 7643: caseExact false).
create unique index users_user_name_key on scim.users (tenant_id, lower(user_name));
create index users_external_id on scim.users (tenant_id, external_id) where external_id is not null;
create index users_created on scim.users (tenant_id, created_at, id);

create table scim.groups (
    tenant_id     uuid not null references tenancy.tenants (id) on delete cascade,
    id            uuid not null,
    display_name  text not null,
    external_id   text,
    resource      jsonb not null,
    version       bigint not null default 1,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, id)
);
-- Entra ID requires displayName to be unique among groups.
create unique index groups_display_name_key on scim.groups (tenant_id, lower(display_name));
create index groups_external_id on scim.groups (tenant_id, external_id) where external_id is not null;
create index groups_created on scim.groups (tenant_id, created_at, id);

-- One row per membership: a PATCH touches only the delta, whatever the group's size.
create table scim.group_members (
    tenant_id    uuid not null,
    group_id     uuid not null,
    member_id    uuid not null,
    member_type  text not null check (member_type in ('User', 'Group')),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (tenant_id, group_id, member_id),
    foreign key (tenant_id, group_id) references scim.groups (tenant_id, id) on delete cascade
);
create index group_members_member on scim.group_members (tenant_id, member_id);

-- The transactional outbox: written in the same transaction as the SCIM mirror, drained by
-- the relay in id order.
create table scim.outbox (
    id               bigserial primary key,
    event_id         uuid not null unique,
    tenant_id        uuid not null,
    routing_key      text not null,
    entity_id        text not null,
    version          bigint not null,
    envelope         jsonb not null,
    traceparent      text,
    attempts         integer not null default 0,
    next_attempt_at  timestamptz,
    last_error       text,
    published_at     timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create index outbox_pending on scim.outbox (id) where published_at is null;
create index outbox_published on scim.outbox (published_at) where published_at is not null;
