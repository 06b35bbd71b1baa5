-- The acquirer simulator's own database (docs/gateway-protocol.md#the-simulator).
-- Tables are prefixed acquirer_ so they can never be mistaken for recur's.

-- Every charge answered, approved or declined: the first answer for a key is the
-- answer for that key forever.
CREATE TABLE acquirer_charges (
    idempotency_key text PRIMARY KEY,
    reference text NOT NULL UNIQUE,
    amount numeric NOT NULL CHECK (amount > 0),
    currency text NOT NULL,
    payment_method text NOT NULL,
    customer_account_id text NOT NULL,
    initiator text NOT NULL CHECK (initiator IN ('merchant', 'customer')),
    recurring_sequence integer CHECK (recurring_sequence >= 1),
    recurring_network_transaction_id text,
    scheme text NOT NULL CHECK (scheme IN ('visa', 'mastercard')),
    status text NOT NULL CHECK (status IN ('approved', 'declined')),
    response_code text NOT NULL,
    category smallint CHECK (category BETWEEN 1 AND 4),
    advice_code text,
    decline_code text,
    network_transaction_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Attempts (distinct idempotency keys) per cycle, for pm_recover_after_<n>. A charge
-- without `recurring` counts in sequence 0.
CREATE TABLE acquirer_cycle_attempts (
    payment_method text NOT NULL,
    customer_account_id text NOT NULL,
    sequence integer NOT NULL,
    attempts integer NOT NULL CHECK (attempts >= 1),
    PRIMARY KEY (payment_method, customer_account_id, sequence)
);

-- Tokens minted by POST /v1/payment-methods: what may be kept of a card, never its
-- number or cvc.
CREATE TABLE acquirer_tokens (
    token text PRIMARY KEY,
    scheme text NOT NULL CHECK (scheme IN ('visa', 'mastercard')),
    last4 text NOT NULL,
    exp_month smallint NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year smallint NOT NULL,
    customer_account_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
