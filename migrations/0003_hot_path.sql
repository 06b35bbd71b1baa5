-- The charge hot path writes cycles, transactions and events by the thousand per
-- second, all naming the same few merchants. A foreign key to merchants on those rows
-- costs a lookup plus a FOR KEY SHARE lock of one merchants row per inserted row (a
-- shared-lock hot spot under concurrent batches), and adds no integrity: each row's
-- merchant is already fixed by its owner (cycle → subscription → merchant, transaction
-- → cycle or series → merchant), whose keys keep theirs. Merchants are never deleted.
ALTER TABLE billing_cycles DROP CONSTRAINT billing_cycles_merchant_id_fkey;
ALTER TABLE transactions DROP CONSTRAINT transactions_merchant_id_fkey;
ALTER TABLE events DROP CONSTRAINT events_merchant_id_fkey;

-- Events: `id` is the key; `seq` orders them and is only read through the merchant
-- and object indexes, so it needs no index of its own.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events DROP CONSTRAINT events_id_key;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id);

-- Due subscriptions in claim order. The lease column (enqueued_until) is in no index
-- or index predicate, so a claim is a HOT update that touches no index; schedulers
-- walk this index with a keyset cursor so leased rows are not re-read during a surge.
DROP INDEX subscriptions_due_idx;
CREATE INDEX subscriptions_due_idx ON subscriptions (next_charge_at, id)
    WHERE status IN ('active', 'past_due') AND next_charge_at IS NOT NULL;
-- Room on every page for the claim and generate updates to stay HOT.
ALTER TABLE subscriptions SET (fillfactor = 80);

-- Sweeps for time-driven transitions.
CREATE INDEX subscriptions_ended_idx ON subscriptions (id)
    WHERE status IN ('active', 'past_due') AND next_charge_at IS NULL AND end_at IS NOT NULL;
DROP INDEX billing_cycles_failed_idx;
CREATE INDEX billing_cycles_failed_idx ON billing_cycles (due_at) WHERE status = 'failed';
