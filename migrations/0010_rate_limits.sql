-- A merchant's own request rates on /v1 (docs/operations.md#rate-limits): NULL is the
-- process default (RECUR_RATE_LIMIT_READS, RECUR_RATE_LIMIT_WRITES). A rate is a
-- sustained number of requests per second and a burst (requests allowed at once);
-- both are set or neither. They are read with the merchant's credentials, so the
-- API's processes pick a change up when their authentication cache refreshes.
ALTER TABLE merchants
    ADD COLUMN rate_limit_reads_per_second integer,
    ADD COLUMN rate_limit_reads_burst integer,
    ADD COLUMN rate_limit_writes_per_second integer,
    ADD COLUMN rate_limit_writes_burst integer,
    ADD CONSTRAINT merchants_rate_limit_reads_check CHECK (
        (rate_limit_reads_per_second IS NULL AND rate_limit_reads_burst IS NULL)
        OR (rate_limit_reads_per_second BETWEEN 1 AND 100000 AND rate_limit_reads_burst BETWEEN 1 AND 1000000)
    ),
    ADD CONSTRAINT merchants_rate_limit_writes_check CHECK (
        (rate_limit_writes_per_second IS NULL AND rate_limit_writes_burst IS NULL)
        OR (rate_limit_writes_per_second BETWEEN 1 AND 100000 AND rate_limit_writes_burst BETWEEN 1 AND 1000000)
    );
