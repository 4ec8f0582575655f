-- Muster store, first schema. Runs unchanged on PostgreSQL 15+ and on PGlite.
-- Unqualified names land in the schema the store was opened with (search_path).
-- Forward-only: never edit this file once released; add 002_... instead.

-- ------------------------------------------------------------------ devices

CREATE TABLE devices (
  id            text PRIMARY KEY,
  platform      text NOT NULL CHECK (platform IN ('apple', 'windows', 'android', 'agent')),
  -- Platform identifiers (UDID, IMEI, AMAPI device name, agent id ...), opaque here.
  identifiers   jsonb NOT NULL DEFAULT '{}'::jsonb,
  serial_number text,
  model         text,
  os_version    text,
  labels        jsonb NOT NULL DEFAULT '{}'::jsonb,
  attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
  enrolled_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at  timestamptz,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Group selectors: equality on the columns, containment / key existence on the maps.
CREATE INDEX devices_platform_idx ON devices (platform, id);
CREATE INDEX devices_serial_idx ON devices (serial_number) WHERE serial_number IS NOT NULL;
CREATE INDEX devices_model_idx ON devices (model) WHERE model IS NOT NULL;
CREATE INDEX devices_os_version_idx ON devices (os_version) WHERE os_version IS NOT NULL;
CREATE INDEX devices_labels_idx ON devices USING gin (labels);
CREATE INDEX devices_attributes_idx ON devices USING gin (attributes);
CREATE INDEX devices_identifiers_idx ON devices USING gin (identifiers jsonb_path_ops);

-- Certificates a device authenticates with. A SCEP certificate exists before
-- the device's first check-in, so device_id is bound later.
CREATE TABLE device_identities (
  cert_sha256   text PRIMARY KEY CHECK (cert_sha256 ~ '^[0-9a-f]{64}$'),
  device_id     text REFERENCES devices (id) ON DELETE CASCADE,
  serial_number text NOT NULL,
  subject       text,
  not_after     timestamptz NOT NULL,
  revoked_at    timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_identities_device_idx ON device_identities (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX device_identities_serial_idx ON device_identities (serial_number);

-- Per-platform enrollment state (APNs token and push magic, Windows session,
-- AMAPI device name ...): the shape belongs to the driver.
CREATE TABLE enrollments (
  device_id  text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  platform   text NOT NULL CHECK (platform IN ('apple', 'windows', 'android', 'agent')),
  status     text NOT NULL DEFAULT 'enrolled' CHECK (status IN ('pending', 'enrolled', 'unenrolled')),
  state      jsonb NOT NULL DEFAULT '{}'::jsonb,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- What a device last reported, one row per kind of report (profiles,
-- device information, installed apps, heartbeat ...).
CREATE TABLE reported_state (
  device_id   text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  kind        text NOT NULL,
  state       jsonb NOT NULL,
  reported_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, kind)
);

-- ------------------------------------------------------------------ policy

-- A bundle's content under one hash never changes, and neither does the
-- content under one name + version.
CREATE TABLE bundles (
  hash          text PRIMARY KEY CHECK (hash ~ '^sha256:[0-9a-f]{64}$'),
  name          text NOT NULL,
  version       text NOT NULL,
  -- RFC 8785 canonical JSON of {name, spec}; the hash is over exactly these bytes.
  content       text NOT NULL,
  first_commit  text,
  first_seen_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (name, version)
);

-- One row per rollout revision; a new revision starts when spec.bundle changes.
CREATE TABLE rollouts (
  name                text NOT NULL,
  revision            integer NOT NULL CHECK (revision >= 1),
  stable_hash         text REFERENCES bundles (hash),
  canary_hash         text NOT NULL REFERENCES bundles (hash),
  current_step        integer NOT NULL DEFAULT 0 CHECK (current_step >= 0),
  weight              integer NOT NULL DEFAULT 0 CHECK (weight BETWEEN 0 AND 100),
  phase               text NOT NULL DEFAULT 'Progressing'
                      CHECK (phase IN ('Progressing', 'Paused', 'Healthy', 'Degraded')),
  conditions          jsonb NOT NULL DEFAULT '[]'::jsonb,
  observed_generation integer NOT NULL DEFAULT 0,
  step_started_at     timestamptz NOT NULL DEFAULT now(),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, revision)
);

-- Desired state: which bundle each device should have under each rollout.
CREATE TABLE assignments (
  device_id   text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  rollout     text NOT NULL,
  revision    integer NOT NULL,
  bundle_hash text NOT NULL REFERENCES bundles (hash),
  bucket      integer NOT NULL CHECK (bucket >= 0 AND bucket < 10000),
  assigned_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, rollout)
);
CREATE INDEX assignments_rollout_idx ON assignments (rollout, device_id) INCLUDE (bundle_hash);

-- ------------------------------------------------------------------ command queue

-- pending -> sent -> acknowledged -> completed | failed; sent -> not_now ->
-- (after backoff) sent again or back to pending; a sent command whose lease
-- ran out is delivered again; anything unfinished -> expired at expires_at.
CREATE TABLE commands (
  seq             bigserial PRIMARY KEY,
  uuid            uuid NOT NULL UNIQUE,
  device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  type            text NOT NULL,
  payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
  priority        integer NOT NULL DEFAULT 0,
  state           text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sent', 'acknowledged', 'not_now', 'completed', 'failed', 'expired')),
  attempts        integer NOT NULL DEFAULT 0,
  max_attempts    integer NOT NULL DEFAULT 10 CHECK (max_attempts >= 1),
  -- Not deliverable before this: backoff after NotNow, and the redelivery
  -- lease of a sent command that was never answered.
  not_before      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz,
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  sent_at         timestamptz,
  acknowledged_at timestamptz,
  finished_at     timestamptz
);
-- The hot path: next command for a device. Finished rows leave the index.
CREATE INDEX commands_next_idx ON commands (device_id, priority DESC, seq)
  WHERE state IN ('pending', 'sent', 'not_now');
-- Pending work across all devices (workers). Only 'pending': sent and
-- not_now rows wait out a lease or a backoff and would clog the head of it;
-- sweep() puts them back to pending when their time comes.
CREATE INDEX commands_due_idx ON commands (priority DESC, seq)
  WHERE state = 'pending';
-- Leases and backoffs running out, for sweep().
CREATE INDEX commands_waiting_idx ON commands (not_before)
  WHERE state IN ('sent', 'not_now');
-- The expiry sweep, over unfinished commands only.
CREATE INDEX commands_expiry_idx ON commands (expires_at)
  WHERE expires_at IS NOT NULL AND state IN ('pending', 'sent', 'acknowledged', 'not_now');
-- History per device.
CREATE INDEX commands_device_history_idx ON commands (device_id, seq DESC);

-- What devices reported. One row per (command, delivery attempt, status):
-- the same report arriving twice inserts nothing the second time.
CREATE TABLE command_results (
  id           bigserial PRIMARY KEY,
  command_uuid uuid NOT NULL REFERENCES commands (uuid) ON DELETE CASCADE,
  attempt      integer NOT NULL,
  status       text NOT NULL CHECK (status IN ('acknowledged', 'completed', 'failed', 'not_now')),
  result       jsonb,
  error        text,
  reported_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (command_uuid, attempt, status)
);

-- ------------------------------------------------------------------ events

-- The outbox is the truth; NOTIFY only wakes listeners up.
CREATE TABLE events (
  id         bigserial PRIMARY KEY,
  topic      text NOT NULL,
  payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_topic_idx ON events (topic, id);

CREATE TABLE event_consumers (
  name          text PRIMARY KEY,
  last_event_id bigint NOT NULL DEFAULT 0,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

-- ------------------------------------------------------------------ audit log

-- Append-only and hash-chained: hash = sha256(prev_hash || canonical content),
-- computed by the application so verification recomputes exactly.
CREATE TABLE audit_log (
  id        bigint PRIMARY KEY,
  at        timestamptz NOT NULL,
  actor     text NOT NULL,
  action    text NOT NULL,
  subject   text NOT NULL,
  details   jsonb NOT NULL DEFAULT '{}'::jsonb,
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
  hash      text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_update_delete
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate
  BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
