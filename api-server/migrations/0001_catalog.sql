-- The Millrace catalog: the source of truth for what each tenant asked for.
-- Constraint names are part of the API: src/error.rs maps them to 409/422 problems.

CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    namespace    text NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_name_key UNIQUE (name),
    CONSTRAINT tenants_namespace_key UNIQUE (namespace),
    CONSTRAINT tenants_name_format CHECK (name ~ '^[a-z][a-z0-9-]{1,38}[a-z0-9]$')
);

-- One row per tenant. slots and jobs are enforced once StreamJobs exist.
CREATE TABLE quotas (
    tenant_id      uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    max_topics     integer NOT NULL DEFAULT 20 CHECK (max_topics >= 0),
    max_partitions integer NOT NULL DEFAULT 120 CHECK (max_partitions >= 0),
    max_jobs       integer NOT NULL DEFAULT 10 CHECK (max_jobs >= 0),
    max_slots      integer NOT NULL DEFAULT 32 CHECK (max_slots >= 0),
    version        bigint NOT NULL DEFAULT 1
);

-- Keys are `mr_<prefix>_<secret>`; only the prefix (for lookup) and SHA-256 of the whole key are kept.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix)
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at, id);

-- Desired state (name .. config, version) and the last observed state of the KafkaTopic.
CREATE TABLE topics (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    name                text NOT NULL,
    kafka_topic         text NOT NULL,
    partitions          integer NOT NULL CHECK (partitions >= 1),
    replicas            integer CHECK (replicas BETWEEN 1 AND 32767),
    config              jsonb NOT NULL DEFAULT '{}'::jsonb,
    version             bigint NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    ready               text,
    ready_reason        text,
    ready_message       text,
    observed_partitions integer,
    drift               text,
    drift_at            timestamptz,
    observed_at         timestamptz,
    -- RESTRICT: a tenant with topics is deleted only by the force path, which removes them first.
    CONSTRAINT topics_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE RESTRICT,
    CONSTRAINT topics_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT topics_kafka_topic_key UNIQUE (kafka_topic)
);
CREATE INDEX topics_tenant_idx ON topics (tenant_id, created_at, id);

-- Room for StreamJobs: jobs, job_versions and savepoints arrive with the engine, in 0002+.

-- Who did what, when. No foreign key: the history outlives a deleted tenant.
CREATE TABLE audit_events (
    id            bigserial PRIMARY KEY,
    tenant_id     uuid,
    actor         text NOT NULL,
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_name text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id    text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, id);

-- Idempotency-Key replay: one row per (credential, key), kept for a day.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,
    status       integer,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
