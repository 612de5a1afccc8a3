-- Rate-limit counters kept in the store (the PostgreSQL store's way of sharing them
-- between replicas). A single-process server counts in memory; the table is here so
-- that both engines answer the same contract.
CREATE TABLE rate_windows (
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    calls        INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);
