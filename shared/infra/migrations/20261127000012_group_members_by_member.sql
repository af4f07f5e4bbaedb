-- A member's groups are read through an index that holds the whole key, member first.
-- `(tenant_id, member_id)` tied with the primary key `(tenant_id, group_id, member_id)` when a
-- plan was made on an empty table — the primary key also allows an index-only scan — and a
-- plan made so is kept for the connection's life: every read of a user's groups then walked
-- all of the company's memberships (8–15 ms a read at 60,000 members, the benchmark's
-- incremental cycle). Unique and covering, this index is the cheaper one whatever the
-- statistics say.
create unique index group_members_by_member on scim.group_members (tenant_id, member_id, group_id);
drop index scim.group_members_member;
