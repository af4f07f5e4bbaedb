-- Each member's link (its manager and how its references resolved) in a table of its own,
-- beside the node (its keys and references). On the node, every link written rewrote the
-- whole row and, since `manager_id` was indexed and `resolution` in a partial index's
-- predicate, inserted into all eight of the node's indexes (no HOT update possible): 24.9 s
-- of PostgreSQL per 100,000-member sync (docs/performance.md, twelfth pass). A link row is
-- narrow and has three indexes. A member without a row has no link yet ('none').
create table hierarchy.links (
    tenant_id       uuid not null references tenancy.tenants (id) on delete cascade,
    scim_user_id    uuid not null,
    manager_id      uuid,
    resolution      text not null default 'none'
                    check (resolution in ('resolved', 'pending', 'ambiguous', 'cycle', 'none')),
    via             text check (via in ('id', 'email', 'name', 'manual')),
    detail          text,
    candidates      uuid[],
    cycle_path      uuid[],
    -- Bumped whenever manager_id changes: the version of `member.placed`.
    link_version    bigint not null default 0,
    updated_at      timestamptz not null default now(),
    primary key (tenant_id, scim_user_id)
);

insert into hierarchy.links (tenant_id, scim_user_id, manager_id, resolution, via, detail, candidates, cycle_path,
                             link_version, updated_at)
select tenant_id, scim_user_id, manager_id, resolution, via, detail, candidates, cycle_path, link_version, updated_at
from hierarchy.nodes
where manager_id is not null or resolution <> 'none' or detail is not null or link_version > 0;

-- Direct reports, and whether a member has any (only then can a new link close a cycle).
create index links_reports on hierarchy.links (tenant_id, manager_id) where manager_id is not null;
-- Refused links to look at again when a member on their path moves (they are few).
create index links_cycles on hierarchy.links (tenant_id) where resolution = 'cycle';

drop index hierarchy.nodes_reports;
drop index hierarchy.nodes_cycles;
alter table hierarchy.nodes
    drop column manager_id,
    drop column resolution,
    drop column via,
    drop column detail,
    drop column candidates,
    drop column cycle_path,
    drop column link_version;
