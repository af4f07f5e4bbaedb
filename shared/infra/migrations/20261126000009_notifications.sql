-- E-mails to direct managers about new team members (DESIGN.md, "Manager settings").
create schema if not exists notifications;

-- One e-mail to one manager listing one or more new reports (a digest). States:
--   scheduled → sending → sent
--                       ↘ scheduled again (SMTP failed, retried with backoff) … → failed
--   scheduled → skipped (at send time: setting off, manager gone, or no recorded team)
--   sending, lease expired (the sender died mid-send) → failed: it may have been delivered.
-- A failed notification goes back to scheduled only by an operator's retry.
create table notifications.notifications (
    id               uuid primary key,
    tenant_id        uuid not null references tenancy.tenants (id) on delete cascade,
    recipient_id     uuid not null,
    state            text not null check (state in ('scheduled', 'sending', 'sent', 'failed', 'skipped')),
    -- First due: the digest window's end, moved off the recipient's weekend.
    due_at           timestamptz not null,
    -- Next due: `due_at`, or later for a retry.
    scheduled_for    timestamptz not null,
    attempts         integer not null default 0,
    reason           text,
    recipient_email  text,
    message_id       text,
    claimed_at       timestamptz,
    sent_at          timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create index notifications_due on notifications.notifications (scheduled_for) where state = 'scheduled';
create index notifications_sending on notifications.notifications (claimed_at) where state = 'sending';
create index notifications_tenant on notifications.notifications (tenant_id, created_at desc);
-- At most one digest per manager still collecting new reports (never attempted yet).
create unique index notifications_collecting on notifications.notifications (tenant_id, recipient_id)
    where state = 'scheduled' and attempts = 0;

-- The idempotency key: a new member is announced once, to the manager they were first placed
-- under. Redelivered events and concurrent replicas meet this primary key.
create table notifications.items (
    tenant_id        uuid not null,
    member_id        uuid not null,
    recipient_id     uuid not null,
    notification_id  uuid not null references notifications.notifications (id) on delete cascade,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, member_id)
);
create index items_notification on notifications.items (notification_id);
