-- Each merchant may choose its own gateway (docs/gateway-protocol.md#per-merchant-gateways).
-- A NULL kind is the process default (RECUR_GATEWAY). An http gateway's signing secret
-- is stored only encrypted with RECUR_SECRET_KEY (src/secrets.rs), bound to the
-- merchant's id. gateway_updated_at changes with every change, the default included:
-- processes that cache a merchant's gateway rebuild it when it moves.
ALTER TABLE merchants
    ADD COLUMN gateway_kind text,
    ADD COLUMN gateway_base_url text,
    ADD COLUMN gateway_secret_enc bytea,
    ADD COLUMN gateway_updated_at timestamptz,
    ADD CONSTRAINT merchants_gateway_check CHECK (
        (gateway_kind IS NULL AND gateway_base_url IS NULL AND gateway_secret_enc IS NULL)
        OR (gateway_kind = 'sandbox' AND gateway_base_url IS NULL AND gateway_secret_enc IS NULL)
        OR (gateway_kind = 'http' AND gateway_base_url IS NOT NULL AND gateway_secret_enc IS NOT NULL)
    );
