-- The relay deletes an outbox row once the broker has confirmed it, instead of marking it
-- published and deleting it a day later. Marking rewrote every row in full (`published_at` was
-- in two partial indexes, so no update could be HOT): a second copy of each event in the table
-- and the WAL, and three index insertions, for a history nothing read. What the outbox holds is
-- now exactly what is still to be published.
delete from scim.outbox where published_at is not null;
drop index scim.outbox_published;
drop index scim.outbox_pending;
alter table scim.outbox drop column published_at;
