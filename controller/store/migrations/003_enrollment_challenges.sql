-- One-time enrollment challenges (SCEP challenge passwords, Windows
-- enrollment credentials), stored as SHA-256 only so a database dump hands
-- out nothing. Consuming one is a single UPDATE, so two replicas racing for
-- the same challenge cannot both accept it.
CREATE TABLE enrollment_challenges (
  sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  purpose     text NOT NULL,
  -- What the challenge was issued for (a group, a person), for audit.
  details     jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz
);
CREATE INDEX enrollment_challenges_expiry_idx ON enrollment_challenges (expires_at) WHERE used_at IS NULL;
