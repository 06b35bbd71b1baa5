-- The pages customers see (docs/pages.md): checkout sessions, the merchant's page
-- settings, the card details a checkout may keep, and the `customer` actor.

-- Used only by later statements' transactions: a value added by ALTER TYPE cannot be
-- used in the transaction that adds it.
ALTER TYPE event_actor ADD VALUE IF NOT EXISTS 'customer';

-- What recur keeps of a card collected by a checkout: the gateway's token is
-- `payment_method`; these are for showing it back (never the number, CVC or full
-- expiry). NULL when the merchant set the token itself.
ALTER TABLE subscriptions
    ADD COLUMN payment_method_brand     text,
    ADD COLUMN payment_method_last4     text CHECK (payment_method_last4 ~ '^[0-9]{4}$'),
    ADD COLUMN payment_method_exp_month smallint CHECK (payment_method_exp_month BETWEEN 1 AND 12),
    ADD COLUMN payment_method_exp_year  smallint CHECK (payment_method_exp_year BETWEEN 2000 AND 2099);

-- One row per merchant that changed its settings; a merchant without a row has the
-- defaults of docs/pages.md#settings.
CREATE TABLE merchant_settings (
    merchant_id                   uuid PRIMARY KEY REFERENCES merchants (id),
    allowed_origins               text[] NOT NULL DEFAULT '{}',
    portal_pause                  boolean NOT NULL DEFAULT false,
    portal_cancel                 boolean NOT NULL DEFAULT true,
    portal_cancel_at_period_end   boolean NOT NULL DEFAULT true,
    portal_switch_plan            boolean NOT NULL DEFAULT false,
    portal_switchable_plan_ids    uuid[] NOT NULL DEFAULT '{}',
    portal_update_authorized_limit boolean NOT NULL DEFAULT false,
    portal_update_payment_method  boolean NOT NULL DEFAULT true,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER merchant_settings_touch BEFORE UPDATE ON merchant_settings
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- `expired` is never stored: an open session past expires_at is shown as expired.
CREATE TYPE checkout_session_status AS ENUM ('open', 'complete', 'locked');

CREATE TABLE checkout_sessions (
    id                uuid PRIMARY KEY,
    merchant_id       uuid NOT NULL REFERENCES merchants (id),
    -- SHA-256 of the 256-bit token handed out once: the token itself is never stored.
    token_hash        bytea NOT NULL CONSTRAINT checkout_sessions_token_hash_key UNIQUE,
    -- Keys this session's CSRF tokens (docs/pages.md#csrf).
    csrf_key          bytea NOT NULL,
    subscription_id   uuid REFERENCES subscriptions (id),
    payment_series_id uuid REFERENCES payment_series (id),
    return_url        text,
    status            checkout_session_status NOT NULL DEFAULT 'open',
    expires_at        timestamptz NOT NULL,
    -- Cards refused on this session's form (invalid, refused by the gateway, or
    -- declined): at 5 the session is locked (docs/pages.md#card-testing).
    refused_cards     integer NOT NULL DEFAULT 0 CHECK (refused_cards >= 0),
    -- The card attached by this session (what may be kept of it).
    payment_method    text,
    card_brand        text,
    card_last4        text CHECK (card_last4 ~ '^[0-9]{4}$'),
    card_exp_month    smallint,
    card_exp_year     smallint,
    attached_at       timestamptz,
    -- The cycle whose first charge the page waits for after attaching (NULL: none);
    -- the session completes when it succeeds (docs/pages.md#the-checkout).
    awaiting_sequence integer,
    -- Attempts the awaited cycle had when the card was attached: only later attempts
    -- are this card's.
    awaiting_after    integer NOT NULL DEFAULT 0,
    -- The last declined attempt already counted as a refused card, so a decline
    -- counts once however often the page is polled.
    counted_decline   uuid,
    completed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT checkout_sessions_owner_check CHECK ((subscription_id IS NULL) <> (payment_series_id IS NULL))
);
CREATE INDEX checkout_sessions_merchant_idx ON checkout_sessions (merchant_id, id);
-- The per-merchant creation rate limit counts the last minute's sessions.
CREATE INDEX checkout_sessions_created_idx ON checkout_sessions (merchant_id, created_at);
CREATE TRIGGER checkout_sessions_touch BEFORE UPDATE ON checkout_sessions
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Customer portal sessions (docs/pages.md#the-portal): one customer of one merchant.
CREATE TABLE customer_sessions (
    id          uuid PRIMARY KEY,
    merchant_id uuid NOT NULL REFERENCES merchants (id),
    customer_id uuid NOT NULL REFERENCES customers (id),
    token_hash  bytea NOT NULL CONSTRAINT customer_sessions_token_hash_key UNIQUE,
    csrf_key    bytea NOT NULL,
    return_url  text,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_sessions_created_idx ON customer_sessions (merchant_id, created_at);
