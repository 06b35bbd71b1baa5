-- Payment links (docs/payment-links.md): subscriptions collected by a link the customer
-- pays instead of a stored card, and the rule that a billing cycle has at most one
-- attempt in flight whatever opened it (docs/guarantees.md#one-attempt-in-flight-per-cycle).

CREATE TYPE collection_method AS ENUM ('charge_automatically', 'send_payment_link');

-- A plan's values are defaults copied by subscriptions created from it.
ALTER TABLE plans
    ADD COLUMN collection_method collection_method NOT NULL DEFAULT 'charge_automatically',
    ADD COLUMN days_until_due    integer NOT NULL DEFAULT 7 CHECK (days_until_due BETWEEN 1 AND 60);
ALTER TABLE subscriptions
    ADD COLUMN collection_method collection_method NOT NULL DEFAULT 'charge_automatically',
    ADD COLUMN days_until_due    integer NOT NULL DEFAULT 7 CHECK (days_until_due BETWEEN 1 AND 60);

-- Used only by later transactions: a value added by ALTER TYPE cannot be used in the
-- transaction that adds it.
ALTER TYPE transaction_kind ADD VALUE IF NOT EXISTS 'payment_link';

CREATE TABLE payment_links (
    id               uuid PRIMARY KEY,
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    billing_cycle_id uuid NOT NULL REFERENCES billing_cycles (id),
    -- The page's 256-bit token. Pages are looked up by its SHA-256 only; the token is
    -- kept so the merchant can read the link's URL back (docs/payment-links.md#tokens).
    token            text NOT NULL,
    token_hash       bytea NOT NULL CONSTRAINT payment_links_token_hash_key UNIQUE,
    -- Keys this link's CSRF tokens (docs/pages.md#csrf).
    csrf_key         bytea NOT NULL,
    expires_at       timestamptz NOT NULL,
    -- When the reminder goes out (a day before expiry); NULL for a link that lives a
    -- day or less. Set once by the scheduler: the reminder went out / the link closed
    -- (expired, or replaced by a fresh link).
    remind_at        timestamptz,
    reminded_at      timestamptz,
    expired_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_links_cycle_idx ON payment_links (billing_cycle_id, created_at);
-- The scheduler's sweeps read only links still open.
CREATE INDEX payment_links_open_idx ON payment_links (expires_at) WHERE expired_at IS NULL;
CREATE INDEX payment_links_remind_idx ON payment_links (remind_at) WHERE reminded_at IS NULL AND expired_at IS NULL;

-- Guarantee 1 across every channel: a billing cycle has at most one attempt in flight.
-- A scheduled charge, a retry, a manual retry, a replayed dead letter and a link payment
-- all open (or reopen) a `pending` transaction; a second one for the same cycle while
-- the first is pending is refused by Postgres, whatever the code path or the timing.
CREATE UNIQUE INDEX transactions_one_pending_per_cycle ON transactions (billing_cycle_id)
    WHERE status = 'pending' AND billing_cycle_id IS NOT NULL;
