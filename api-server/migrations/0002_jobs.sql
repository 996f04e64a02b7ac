-- StreamJobs: a job is a catalog row (its name, desired state and the version it runs) with
-- one job_versions row per change of what it runs (SQL and settings). Each is applied as a
-- StreamJob resource named like the job in the tenant's namespace; the operator runs it.
-- Constraint names are part of the API: src/error.rs maps them to 409/422 problems.

CREATE TABLE jobs (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL,
    name                 text NOT NULL,
    -- The job_versions row the StreamJob is built from.
    current_version      integer NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    state                text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'suspended')),
    -- Denormalised from the current version, for the slots quota.
    parallelism          integer NOT NULL CHECK (parallelism >= 1),
    -- Bumped by POST .../savepoints: the StreamJob's savepointTriggerNonce.
    savepoint_nonce      bigint NOT NULL DEFAULT 0,
    -- The ETag: increases with every change of the row's desired state.
    version              bigint NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- The StreamJob's status as last observed.
    phase                text,
    ready                text,
    ready_reason         text,
    ready_message        text,
    observed_parallelism integer,
    workers              text,
    last_checkpoint      jsonb,
    last_error           text,
    drift                text,
    drift_at             timestamptz,
    observed_at          timestamptz,
    -- RESTRICT: a tenant with jobs is deleted only by the force path, which removes them first.
    CONSTRAINT jobs_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE RESTRICT,
    CONSTRAINT jobs_tenant_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX jobs_tenant_idx ON jobs (tenant_id, created_at, id);

-- What a job runs, one row per change; never updated.
CREATE TABLE job_versions (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version    integer NOT NULL CHECK (version >= 1),
    sql        text NOT NULL,
    -- parallelism, maxParallelism, slotsPerWorker, upgradeMode, checkpointing, savepoints,
    -- deadLetter, allowNonRestoredState (camelCase, as in the API).
    settings   jsonb NOT NULL,
    -- Why this version exists: create, update, rescale.
    cause      text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, version)
);

-- The job's savepoints as the operator reported them (status.savepointHistory), kept after
-- the operator prunes its history and after the job is deleted (by tenant and job name), so
-- that a job created again under the same name can start from one (initialSavepoint).
CREATE TABLE savepoints (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job_name     text NOT NULL,
    location     text NOT NULL,
    trigger      text NOT NULL,
    parallelism  integer NOT NULL,
    completed_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT savepoints_job_location_key UNIQUE (tenant_id, job_name, location)
);
CREATE INDEX savepoints_job_idx ON savepoints (tenant_id, job_name, completed_at DESC, id);
