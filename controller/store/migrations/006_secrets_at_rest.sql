-- Secrets at rest and a keyed audit chain.
--
-- Commands: payload fields that hold a secret (a Mac's unlock PIN, an Android
-- reset password) are sealed by the application before they are stored, and
-- `sealed` lists their paths in the payload (a JSON array of key arrays, e.g.
-- [["fields","PIN"]]). The statement that makes a command final removes those
-- fields and clears the list; the CHECK below makes a final command that
-- still holds one impossible to write.
ALTER TABLE commands ADD COLUMN sealed jsonb
  CHECK (sealed IS NULL OR jsonb_typeof(sealed) = 'array');

-- The payload without the fields at `paths` (NULL paths: unchanged).
CREATE FUNCTION commands_strip_sealed(payload jsonb, paths jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  p jsonb;
BEGIN
  IF paths IS NULL THEN
    RETURN payload;
  END IF;
  FOR p IN SELECT jsonb_array_elements(paths) LOOP
    payload := payload #- ARRAY(SELECT jsonb_array_elements_text(p));
  END LOOP;
  RETURN payload;
END
$$;

-- Commands queued before this migration held these secrets in clear. The SQL
-- cannot seal them (the key is not in the database): finished ones lose the
-- secret now; unfinished ones are still delivered as they are and lose it
-- when they finish, like sealed ones. The command types are named here, once,
-- because only a migration can know what older versions stored.
UPDATE commands SET payload = payload #- '{fields,PIN}'
 WHERE type IN ('DeviceLock', 'EraseDevice') AND payload -> 'fields' ? 'PIN'
   AND state IN ('completed', 'failed', 'expired');
UPDATE commands SET payload = payload - 'newPassword'
 WHERE type = 'amapi.issueCommand' AND payload ? 'newPassword'
   AND state IN ('completed', 'failed', 'expired');
UPDATE commands SET sealed = '[["fields","PIN"]]'::jsonb
 WHERE type IN ('DeviceLock', 'EraseDevice') AND payload -> 'fields' ? 'PIN'
   AND state NOT IN ('completed', 'failed', 'expired');
UPDATE commands SET sealed = '[["newPassword"]]'::jsonb
 WHERE type = 'amapi.issueCommand' AND payload ? 'newPassword'
   AND state NOT IN ('completed', 'failed', 'expired');

ALTER TABLE commands ADD CONSTRAINT commands_finished_hold_no_secret
  CHECK (sealed IS NULL OR state NOT IN ('completed', 'failed', 'expired'));

-- Audit log: rows from here on are chained with HMAC-SHA256 under a key kept
-- outside the database; key_id names that key (its id, not the key). Rows
-- written before this migration have no key_id and stay verifiable as plain
-- SHA-256; the verifier accepts them only before the first keyed row.
ALTER TABLE audit_log ADD COLUMN key_id text CHECK (key_id ~ '^[0-9a-f]{16}$');
