-- What the reconciler and the admin API need beyond the first schema.

-- Rollout revisions carry what a person did to them and the spec they run
-- under, so a restart (or another replica) resumes exactly where it was.
ALTER TABLE rollouts
  ADD COLUMN paused  boolean NOT NULL DEFAULT false,
  ADD COLUMN aborted boolean NOT NULL DEFAULT false,
  ADD COLUMN message text NOT NULL DEFAULT '',
  ADD COLUMN bundle  text NOT NULL DEFAULT '',
  ADD COLUMN spec    jsonb NOT NULL DEFAULT '{}'::jsonb,
  ADD COLUMN counts  jsonb NOT NULL DEFAULT '{}'::jsonb,
  ADD COLUMN deleted boolean NOT NULL DEFAULT false;

-- Per-assignment sync state, so per-device and per-rollout counts are one query.
ALTER TABLE assignments
  ADD COLUMN sync        text NOT NULL DEFAULT 'OutOfSync'
                         CHECK (sync IN ('Synced', 'OutOfSync', 'Pending', 'Failed')),
  ADD COLUMN sync_detail text NOT NULL DEFAULT '',
  ADD COLUMN synced_at   timestamptz;
CREATE INDEX assignments_sync_idx ON assignments (rollout, bundle_hash, sync);

-- The source's memory: the applied commit, the last refused one and why.
CREATE TABLE source_state (
  key        text PRIMARY KEY,
  value      jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Admin API bearer tokens, stored as SHA-256 only.
CREATE TABLE api_tokens (
  id           text PRIMARY KEY,
  name         text NOT NULL,
  scope        text NOT NULL CHECK (scope IN ('read', 'operate', 'admin')),
  token_sha256 text NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);
