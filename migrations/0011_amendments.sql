-- Amendments (docs/amendments.md): a subscription moves to other terms mid-period.
-- An upgrade that takes effect now is charged a proration on a billing cycle of its
-- own, and the new terms apply only once that charge is approved; other changes wait
-- for the end of the period and apply when the next cycle opens.

-- A proration attempt (never retried by the schedule).
ALTER TYPE transaction_kind ADD VALUE IF NOT EXISTS 'proration';

-- A billing cycle is a calendar period, or the proration of a change inside one.
-- Only period cycles count for dunning's grace period and for completion.
CREATE TYPE cycle_kind AS ENUM ('period', 'proration');
ALTER TABLE billing_cycles ADD COLUMN kind cycle_kind NOT NULL DEFAULT 'period';

CREATE TYPE change_status AS ENUM ('awaiting_payment', 'scheduled', 'applied', 'failed', 'superseded');
CREATE TYPE change_effective AS ENUM ('now', 'period_end');

CREATE TABLE subscription_changes (
    id               uuid PRIMARY KEY,
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    subscription_id  uuid NOT NULL REFERENCES subscriptions (id),
    status           change_status NOT NULL,
    effective        change_effective NOT NULL,
    -- The terms before and after the change (the currency never changes).
    from_plan_id     uuid REFERENCES plans (id),
    from_amount      numeric NOT NULL CHECK (from_amount > 0),
    from_interval_unit  interval_unit NOT NULL,
    from_interval_count integer NOT NULL CHECK (from_interval_count > 0),
    plan_id          uuid REFERENCES plans (id),
    amount           numeric NOT NULL CHECK (amount > 0),
    currency         char(3) NOT NULL,
    interval_unit    interval_unit NOT NULL,
    interval_count   integer NOT NULL CHECK (interval_count > 0),
    -- The instant the proration was computed at (the request's billing time).
    requested_at     timestamptz NOT NULL,
    -- When the new terms take effect: the request's instant, or the period's end.
    effective_at     timestamptz NOT NULL,
    -- The prorated charge, rounded once to the currency's minor unit (0 when none).
    proration_amount numeric NOT NULL DEFAULT 0 CHECK (proration_amount >= 0),
    billing_cycle_id uuid REFERENCES billing_cycles (id),
    failure_code     text,
    applied_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- At most one change waits per subscription (awaiting its proration charge, or its
-- period's end): a second request supersedes a scheduled one, and is refused while a
-- proration charge is in flight.
CREATE UNIQUE INDEX subscription_changes_open_key ON subscription_changes (subscription_id)
    WHERE status IN ('awaiting_payment', 'scheduled');
CREATE INDEX subscription_changes_subscription_idx ON subscription_changes (subscription_id, id);
CREATE UNIQUE INDEX subscription_changes_cycle_key ON subscription_changes (billing_cycle_id)
    WHERE billing_cycle_id IS NOT NULL;
CREATE TRIGGER subscription_changes_touch BEFORE UPDATE ON subscription_changes
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Test clocks per sandbox merchant (docs/api.md#test-clocks): a subscription created
-- with one follows its frozen time instead of the deployment's clock, so one sandbox
-- merchant's tests never move another's time.
CREATE TABLE test_clocks (
    id          uuid PRIMARY KEY,
    merchant_id uuid NOT NULL REFERENCES merchants (id),
    name        text,
    frozen_time timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX test_clocks_merchant_idx ON test_clocks (merchant_id, id);
CREATE TRIGGER test_clocks_touch BEFORE UPDATE ON test_clocks
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

ALTER TABLE subscriptions ADD COLUMN test_clock_id uuid REFERENCES test_clocks (id);
-- The sweeps of a test clock read its subscriptions through this (small) index.
CREATE INDEX subscriptions_test_clock_idx ON subscriptions (test_clock_id, next_charge_at)
    WHERE test_clock_id IS NOT NULL;
-- The hot due claim reads only subscriptions on the deployment's clock: the index
-- predicate says so, so that claim pays nothing for test clocks.
DROP INDEX subscriptions_due_idx;
CREATE INDEX subscriptions_due_idx ON subscriptions (next_charge_at, id)
    WHERE status IN ('active', 'past_due') AND next_charge_at IS NOT NULL AND test_clock_id IS NULL;
