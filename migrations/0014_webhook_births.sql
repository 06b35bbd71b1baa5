-- First attempts write their delivery row once (docs/webhooks.md#never-lost).
--
-- A charge's record batch does not write its deliveries' rows: it writes one
-- `webhook_births` row naming every delivery it owes (delivery id, endpoint, event),
-- leased to the worker that committed it. That worker sends the first attempts and
-- writes each delivery's row with the attempt's outcome, then deletes the birth row.
-- A birth whose lease passes (the worker died, or could not record) is turned into
-- pending delivery rows by the scheduler, with the same ids. A delivered message thus
-- costs one row write instead of an insert and an update that both paid for every
-- index.
CREATE TABLE webhook_births (
    id           uuid PRIMARY KEY,
    delivery_ids uuid[] NOT NULL,
    endpoint_ids uuid[] NOT NULL,
    event_ids    uuid[] NOT NULL,
    -- Wall clock: until then the worker that committed the events owns the deliveries.
    lease_until  timestamptz NOT NULL,
    CHECK (cardinality(delivery_ids) = cardinality(endpoint_ids)
           AND cardinality(delivery_ids) = cardinality(event_ids))
);
CREATE INDEX webhook_births_lease_idx ON webhook_births (lease_until);
