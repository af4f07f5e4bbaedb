-- The requests still waiting for a seat, for granting them when the seat's capacity goes.
-- Without it, a plan made on a young table (few rows, no statistics) read every request of
-- the seat through the primary key with `not granted` as a filter: 8-12 ms a statement,
-- about 300 times in the 100,000-user benchmark, growing with the company.
create index seat_requests_waiting on assignments.seat_requests (tenant_id, seat, id) where not granted;
