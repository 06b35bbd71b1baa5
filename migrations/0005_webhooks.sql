-- Webhooks (docs/webhooks.md). The events table is the outbox: the statement that
-- writes an event also writes one delivery row per enabled endpoint subscribed to its
-- type, in the same transaction, so a committed event always has its deliveries.

-- The public type of an event (`billing_cycle.succeeded`), and the object as its GET
-- showed it when the event was committed (kept only when an endpoint wanted it).
ALTER TABLE events ADD COLUMN webhook_type text, ADD COLUMN object jsonb;
UPDATE events SET webhook_type = CASE
    WHEN type = 'status_changed' THEN object_type || '.' || (data ->> 'to')
    WHEN object_type = 'transaction' AND type LIKE 'charge\_%' THEN 'transaction.' || substr(type, 8)
    ELSE object_type || '.' || type END;
ALTER TABLE events ALTER COLUMN webhook_type SET NOT NULL;

CREATE TYPE webhook_endpoint_status AS ENUM ('enabled', 'disabled');

CREATE TABLE webhook_endpoints (
    id            uuid PRIMARY KEY,
    merchant_id   uuid NOT NULL REFERENCES merchants (id),
    url           text NOT NULL,
    event_types   text[] NOT NULL,
    status        webhook_endpoint_status NOT NULL DEFAULT 'enabled',
    description   text,
    metadata      jsonb NOT NULL DEFAULT '{}',
    -- Kept, not hashed: signing needs the key itself. Never returned after creation.
    secret        text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    disabled_reason text,
    -- The first failure since the last success (auto-disable after 5 days of them).
    failing_since   timestamptz,
    last_success_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_merchant_idx ON webhook_endpoints (merchant_id, id);
CREATE TRIGGER webhook_endpoints_touch BEFORE UPDATE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TYPE webhook_delivery_status AS ENUM ('pending', 'succeeded', 'failed');

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        uuid NOT NULL,
    merchant_id     uuid NOT NULL,
    type            text NOT NULL,
    status          webhook_delivery_status NOT NULL DEFAULT 'pending',
    attempts        int NOT NULL DEFAULT 0,
    last_status_code int,
    last_error      text,
    -- Wall clock (never the test clock): when the next attempt may go.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The lease (docs/architecture.md#the-lease): a deliver-webhook job is in Redis.
    enqueued_until  timestamptz,
    event_at        timestamptz NOT NULL,
    delivered_at    timestamptz,
    -- The start of the receiver's last answer (at most 1 kB), for operators only.
    last_response   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_endpoint_event_key UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at, id);
CREATE TRIGGER webhook_deliveries_touch BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Does an endpoint's list (`*`, exact types, `prefix.*`) take this type?
CREATE FUNCTION webhook_subscribed(patterns text[], t text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(patterns) AS p
                   WHERE p = '*' OR p = t OR (right(p, 2) = '.*' AND starts_with(t, left(p, -1))))
$$;
