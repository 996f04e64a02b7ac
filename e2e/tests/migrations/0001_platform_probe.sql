-- A throwaway table that proves migrations run against the local PostgreSQL.
CREATE TABLE platform_probe (
    id BIGSERIAL PRIMARY KEY,
    note TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
