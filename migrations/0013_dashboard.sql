-- Sessions of the merchant dashboard and the operator console (docs/dashboard.md#sessions).
-- The cookie holds a 256-bit random token; only its SHA-256 is stored. A session ends
-- at expires_at (12 hours after sign-in) or when revoked (sign-out, or "sign out
-- everywhere"), whichever comes first.
CREATE TABLE page_sessions (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('merchant', 'operator')),
    merchant_id uuid REFERENCES merchants (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    csrf_key    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK ((kind = 'merchant') = (merchant_id IS NOT NULL))
);
CREATE INDEX page_sessions_merchant_idx ON page_sessions (merchant_id) WHERE revoked_at IS NULL;
