-- Fewer writes per webhook delivery (docs/webhooks.md#never-lost): a delivery row is
-- written twice on its way (born, then sent), and each write paid for every index.
-- An endpoint's deliveries are listed in event order through the unique
-- (endpoint_id, event_id) index (event ids are time-ordered UUIDv7), so the
-- (endpoint_id, created_at, id) index goes; updated_at is set by the statements that
-- change what a merchant sees (an attempt, a retry, a replay), not by a trigger on
-- every write (a lease stamp is not a change).
DROP INDEX webhook_deliveries_endpoint_idx;
DROP TRIGGER webhook_deliveries_touch ON webhook_deliveries;

-- An event's object is kept as the exact text recur serialized (json, not jsonb): every
-- attempt of a message then carries byte-identical bodies, and storing it skips
-- jsonb's parse into a tree.
ALTER TABLE events ALTER COLUMN object TYPE json USING object::json;
