-- What the assignments worker made of each member: the assignment that governs them and why,
-- the settings they hold, what is actually on, and what waits for a seat.

-- Every change of the company's assignments or catalog bumps it; it versions
-- `tenant.assignments_changed`.
alter table assignments.catalogs add column config_version bigint not null default 0;

create table assignments.member_state (
    tenant_id        uuid not null references tenancy.tenants (id) on delete cascade,
    scim_user_id     uuid not null,
    -- The governing assignment when last computed (kept when it is deleted: the history names it).
    assignment_id    uuid not null,
    assignment_name  text not null,
    mode             text not null check (mode in ('manual', 'automatic')),
    -- The member's group that matched; null under the default assignment.
    via_group        uuid,
    -- Deactivated (or no longer imported) members hold no seats and nothing is on.
    active           boolean not null,
    -- The member's settings: the assignment's, or (manual) as applied on landing and edited since.
    held             jsonb not null,
    -- What is on: `held` less what waits for a seat.
    effective        jsonb not null,
    -- [{setting, seat}] kept off until the seat is granted.
    pending          jsonb not null default '[]',
    -- Some data capture is on (the notifier's "recorded team").
    records          boolean not null default false,
    version          bigint not null default 1,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, scim_user_id)
);
-- With the member id last: the worker reads the members of an assignment or group in id-ordered pages.
create index member_state_assignment on assignments.member_state (tenant_id, assignment_id, scim_user_id);
create index member_state_via_group on assignments.member_state (tenant_id, via_group, scim_user_id)
    where via_group is not null;

-- Seat requests in the order they were made (`id`); for a seat of limited capacity the first
-- `capacity` are granted and the rest wait in that order.
create table assignments.seat_requests (
    id            bigserial not null,
    tenant_id     uuid not null references tenancy.tenants (id) on delete cascade,
    seat          text not null,
    scim_user_id  uuid not null,
    granted       boolean not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, seat, scim_user_id)
);
create index seat_requests_line on assignments.seat_requests (tenant_id, seat, granted, id);
create index seat_requests_member on assignments.seat_requests (tenant_id, scim_user_id);

-- Every change of a member's assignment or settings, with its cause.
create table assignments.history (
    id               bigserial primary key,
    tenant_id        uuid not null references tenancy.tenants (id) on delete cascade,
    scim_user_id     uuid not null,
    cause            text not null,
    assignment_id    uuid not null,
    assignment_name  text not null,
    before           jsonb,
    after            jsonb not null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create index history_member on assignments.history (tenant_id, scim_user_id, id desc);
