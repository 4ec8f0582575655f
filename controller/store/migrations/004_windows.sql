-- Windows OMA-DM sessions. A session is several HTTP round trips (the device
-- answers each server message in its next one), and the next message may
-- reach another replica: the session's state machine (what was sent under
-- which MsgID/CmdID, what waits for room) lives here, never only in memory.
-- The state's shape belongs to the Windows driver (protocols/windows/syncml/session.ts);
-- it holds command ids and status codes, never rendered payloads or secrets.
CREATE TABLE windows_sessions (
  device_id  text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  session_id text NOT NULL,
  state      jsonb NOT NULL,
  ended      boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, session_id)
);
-- A new session ends the device's open ones (their unanswered commands go back to the queue).
CREATE INDEX windows_sessions_open_idx ON windows_sessions (device_id) WHERE NOT ended;
CREATE INDEX windows_sessions_updated_idx ON windows_sessions (updated_at);
