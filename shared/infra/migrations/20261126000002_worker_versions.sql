-- The idempotency rule of DESIGN.md: per worker and entity, the last version processed,
-- written in the same transaction as the worker's effects.
create schema if not exists worker;

create table worker.processed_versions (
    worker      text not null,
    tenant_id   uuid not null,
    entity_id   text not null,
    version     bigint not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (worker, tenant_id, entity_id)
);
