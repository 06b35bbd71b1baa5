-- recur schema: every object of SPEC section 3. States are Postgres enums, money is
-- numeric, and every constraint the code maps to an HTTP answer has a stable name.

CREATE TYPE plan_status AS ENUM ('draft', 'active', 'archived');
CREATE TYPE interval_unit AS ENUM ('day', 'week', 'month', 'year');
CREATE TYPE subscription_status AS ENUM
    ('pending', 'trialing', 'active', 'past_due', 'paused', 'cancelled', 'completed');
CREATE TYPE cycle_status AS ENUM
    ('pending', 'retrying', 'succeeded', 'failed', 'error', 'cancelled');
CREATE TYPE transaction_kind AS ENUM ('scheduled', 'retry', 'manual_retry', 'payment_series');
CREATE TYPE transaction_status AS ENUM ('pending', 'succeeded', 'declined', 'error');
CREATE TYPE series_status AS ENUM ('pending', 'active', 'cancelled');
CREATE TYPE event_actor AS ENUM ('merchant', 'system', 'operator');

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE merchants (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    merchant_key uuid NOT NULL CONSTRAINT merchants_merchant_key_key UNIQUE,
    -- SHA-256 of a 256-bit random secret: a slow KDF buys nothing for random secrets
    -- and would cost a hash per request.
    secret_hash  bytea NOT NULL,
    sandbox      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    customer_account_id text NOT NULL CHECK (length(customer_account_id) BETWEEN 1 AND 255),
    email               text,
    phone               text,
    first_name          text,
    last_name           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customers_merchant_account_key UNIQUE (merchant_id, customer_account_id)
);
CREATE TRIGGER customers_touch BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE plans (
    id                   uuid PRIMARY KEY,
    merchant_id          uuid NOT NULL REFERENCES merchants (id),
    name                 text NOT NULL,
    description          text,
    tags                 text[] NOT NULL DEFAULT '{}',
    amount               numeric NOT NULL CHECK (amount > 0),
    currency             char(3) NOT NULL,
    interval_unit        interval_unit NOT NULL,
    interval_count       integer NOT NULL CHECK (interval_count > 0),
    trial_days           integer CHECK (trial_days BETWEEN 1 AND 730),
    grace_period_days    integer NOT NULL DEFAULT 0 CHECK (grace_period_days >= 0),
    retry_schedule_hours integer[] NOT NULL DEFAULT '{24,72,120}',
    metadata             jsonb NOT NULL DEFAULT '{}',
    status               plan_status NOT NULL DEFAULT 'draft',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plans_merchant_idx ON plans (merchant_id, id);
CREATE TRIGGER plans_touch BEFORE UPDATE ON plans
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE subscriptions (
    id                   uuid PRIMARY KEY,
    merchant_id          uuid NOT NULL REFERENCES merchants (id),
    customer_id          uuid NOT NULL REFERENCES customers (id),
    plan_id              uuid REFERENCES plans (id),
    description          text,
    -- Terms are copied from the plan at creation: later plan edits affect only new
    -- subscriptions (SPEC 3).
    amount               numeric NOT NULL CHECK (amount > 0),
    currency             char(3) NOT NULL,
    interval_unit        interval_unit NOT NULL,
    interval_count       integer NOT NULL CHECK (interval_count > 0),
    grace_period_days    integer NOT NULL DEFAULT 0,
    retry_schedule_hours integer[] NOT NULL,
    start_at             timestamptz NOT NULL,
    end_at               timestamptz,
    charge_hour          smallint CHECK (charge_hour BETWEEN 0 AND 23),
    payment_method       text,
    trial_days           integer,
    authorized_limit     numeric CHECK (authorized_limit > 0),
    partner_reference    text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    status               subscription_status NOT NULL,
    -- Calendar: cycle n (n >= anchor_sequence) is due at anchor_at + (n - anchor_sequence) intervals.
    anchor_at            timestamptz NOT NULL,
    anchor_sequence      integer NOT NULL DEFAULT 1,
    next_sequence        integer NOT NULL DEFAULT 1,
    next_charge_at       timestamptz,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    trial_end_at         timestamptz,
    paused_at            timestamptz,
    resume_at            timestamptz,
    cancel_at            timestamptz,
    cancelled_at         timestamptz,
    cancellation_reason  text,
    -- Scheduler lease: set when a job for this row was enqueued; the sweep re-enqueues
    -- only once it has passed (lost Redis work).
    enqueued_until       timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_partner_reference_key UNIQUE (merchant_id, partner_reference)
);
CREATE INDEX subscriptions_merchant_idx ON subscriptions (merchant_id, id);
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id);
CREATE INDEX subscriptions_plan_idx ON subscriptions (plan_id);
-- The scheduler's sweeps: only rows that can become due are indexed, so a sweep costs
-- what is due, not what is stored.
CREATE INDEX subscriptions_due_idx ON subscriptions (next_charge_at)
    WHERE status IN ('active', 'past_due') AND next_charge_at IS NOT NULL;
CREATE INDEX subscriptions_trial_idx ON subscriptions (trial_end_at)
    WHERE status = 'trialing';
CREATE INDEX subscriptions_resume_idx ON subscriptions (resume_at)
    WHERE status = 'paused' AND resume_at IS NOT NULL;
CREATE INDEX subscriptions_cancel_at_idx ON subscriptions (cancel_at)
    WHERE cancel_at IS NOT NULL AND status NOT IN ('cancelled', 'completed');
CREATE TRIGGER subscriptions_touch BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE billing_cycles (
    id              uuid PRIMARY KEY,
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    subscription_id uuid NOT NULL REFERENCES subscriptions (id),
    sequence        integer NOT NULL CHECK (sequence > 0),
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    amount          numeric NOT NULL,
    currency        char(3) NOT NULL,
    status          cycle_status NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_retry_at   timestamptz,
    failure_code    text,
    failed_at       timestamptz,
    first_attempt_at timestamptz,
    enqueued_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_cycles_subscription_sequence_key UNIQUE (subscription_id, sequence)
);
CREATE INDEX billing_cycles_retry_idx ON billing_cycles (next_retry_at)
    WHERE status = 'retrying';
CREATE INDEX billing_cycles_pending_idx ON billing_cycles (enqueued_until)
    WHERE status = 'pending';
CREATE INDEX billing_cycles_failed_idx ON billing_cycles (failed_at)
    WHERE status = 'failed';
CREATE TRIGGER billing_cycles_touch BEFORE UPDATE ON billing_cycles
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE payment_series (
    id                uuid PRIMARY KEY,
    merchant_id       uuid NOT NULL REFERENCES merchants (id),
    customer_id       uuid NOT NULL REFERENCES customers (id),
    payment_method    text NOT NULL,
    currency          char(3) NOT NULL,
    description       text,
    partner_reference text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    status            series_status NOT NULL DEFAULT 'active',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_series_partner_reference_key UNIQUE (merchant_id, partner_reference)
);
CREATE INDEX payment_series_merchant_idx ON payment_series (merchant_id, id);
CREATE TRIGGER payment_series_touch BEFORE UPDATE ON payment_series
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE transactions (
    id                uuid PRIMARY KEY,
    merchant_id       uuid NOT NULL REFERENCES merchants (id),
    billing_cycle_id  uuid REFERENCES billing_cycles (id),
    payment_series_id uuid REFERENCES payment_series (id),
    kind              transaction_kind NOT NULL,
    amount            numeric NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL,
    payment_method    text,
    description       text,
    status            transaction_status NOT NULL DEFAULT 'pending',
    gateway_reference text,
    decline_code      text,
    error_message     text,
    -- Sent to the gateway with every call for this attempt: the gateway dedups on it.
    idempotency_key   text NOT NULL CONSTRAINT transactions_idempotency_key_key UNIQUE,
    attempt           integer NOT NULL CHECK (attempt > 0),
    partner_reference text,
    enqueued_until    timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    settled_at        timestamptz,
    CONSTRAINT transactions_owner_check CHECK ((billing_cycle_id IS NULL) <> (payment_series_id IS NULL)),
    -- One transaction per attempt of a cycle: a duplicate job cannot open a second one.
    CONSTRAINT transactions_cycle_attempt_key UNIQUE (billing_cycle_id, attempt),
    CONSTRAINT transactions_partner_reference_key UNIQUE (merchant_id, partner_reference)
);
CREATE INDEX transactions_series_idx ON transactions (payment_series_id);
CREATE INDEX transactions_pending_idx ON transactions (enqueued_until)
    WHERE status = 'pending';
CREATE TRIGGER transactions_touch BEFORE UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    id          uuid NOT NULL CONSTRAINT events_id_key UNIQUE,
    merchant_id uuid NOT NULL REFERENCES merchants (id),
    object_type text NOT NULL,
    object_id   uuid NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    actor       event_actor NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_object_idx ON events (object_id, seq);
CREATE INDEX events_merchant_idx ON events (merchant_id, seq);

CREATE TABLE idempotency_keys (
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    key             text NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    bytea NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- The sandbox gateway's own books: what a real acquirer would have charged.
CREATE TABLE sandbox_charges (
    id                  uuid PRIMARY KEY,
    idempotency_key     text NOT NULL CONSTRAINT sandbox_charges_idempotency_key_key UNIQUE,
    merchant_key        uuid NOT NULL,
    amount              numeric NOT NULL,
    currency            char(3) NOT NULL,
    customer_account_id text NOT NULL,
    payment_method      text NOT NULL,
    reference           text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandbox_charges_merchant_idx ON sandbox_charges (merchant_key, id);

-- Attempts per idempotency key, so pm_sandbox_recover_after_N can count per cycle.
CREATE TABLE sandbox_attempts (
    scope    text PRIMARY KEY,
    attempts integer NOT NULL
);

-- The test clock (RECUR_CLOCK=manual): one row shared by every process.
CREATE TABLE clock (
    id  boolean PRIMARY KEY DEFAULT true CHECK (id),
    now timestamptz NOT NULL
);
