-- What the card network answered to a declined attempt (docs/governor.md): the retry
-- governor counts a card's network declines per merchant and reads the latest one's codes.
-- Nullable, no default: adding them rewrites no row.
ALTER TABLE transactions
    ADD COLUMN network_scheme   text,
    ADD COLUMN network_code     text,
    ADD COLUMN network_category smallint,
    ADD COLUMN network_advice   text;

-- The governor's counter: a card's network declines, newest first. Partial, so the
-- approved charges of the hot path never write to it.
CREATE INDEX transactions_card_declines_idx ON transactions (merchant_id, payment_method, settled_at DESC)
    WHERE status = 'declined' AND network_scheme IS NOT NULL;
