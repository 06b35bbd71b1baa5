-- The scheduler finds the dead letters Redis lost from the rows they left in `error`
-- (src/dlq/restore.rs); these keep that scan proportional to the rows in error.
CREATE INDEX transactions_error_idx ON transactions (id) WHERE status = 'error';
CREATE INDEX billing_cycles_error_idx ON billing_cycles (id) WHERE status = 'error';
