-- One identity model for every protocol (docs/security.md): a device identity
-- records which protocol and enrollment credential issued it, and is bound at
-- first use to exactly one device id and one platform, never moved after.
ALTER TABLE device_identities ADD COLUMN platform text CHECK (platform IN ('apple', 'windows', 'android', 'agent'));
-- apple-scep, windows-wstep, agent …: which endpoint issued it.
ALTER TABLE device_identities ADD COLUMN protocol text;
-- The SHA-256 of the enrollment credential (challenge, password, token) it was issued under; 'static' for a shared one.
ALTER TABLE device_identities ADD COLUMN credential text;
-- The device an admin issued that credential for (`muster enroll … --device ID`): it may replace that device's identity.
ALTER TABLE device_identities ADD COLUMN for_device text;
-- The identity whose holder signed the renewal that issued this one.
ALTER TABLE device_identities ADD COLUMN renewal_of text;
ALTER TABLE device_identities ADD COLUMN bound_at timestamptz;

-- Before this migration only SCEP left identities unbound, and every bound one is its device's platform.
UPDATE device_identities i SET platform = d.platform, bound_at = i.created_at FROM devices d WHERE d.id = i.device_id;
UPDATE device_identities SET platform = 'apple' WHERE platform IS NULL;
UPDATE device_identities SET protocol = CASE platform WHEN 'apple' THEN 'apple-scep' WHEN 'windows' THEN 'windows-wstep' ELSE platform END;
ALTER TABLE device_identities ALTER COLUMN platform SET NOT NULL;
ALTER TABLE device_identities ALTER COLUMN protocol SET NOT NULL;

-- Defence in depth under the application's checks: once bound, an identity's
-- device and platform never change, and it is bound only to a device of its own platform.
CREATE FUNCTION device_identities_bind_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.device_id IS NOT NULL AND NEW.device_id IS DISTINCT FROM OLD.device_id THEN
    RAISE EXCEPTION 'device identity % is bound to device % and cannot move', OLD.cert_sha256, OLD.device_id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.platform IS DISTINCT FROM OLD.platform THEN
    RAISE EXCEPTION 'device identity % is a % identity', OLD.cert_sha256, OLD.platform
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF NEW.device_id IS NOT NULL AND EXISTS (
       SELECT 1 FROM devices d WHERE d.id = NEW.device_id AND d.platform <> NEW.platform) THEN
    RAISE EXCEPTION 'a % identity cannot be bound to device %, which is not a % device', NEW.platform, NEW.device_id, NEW.platform
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER device_identities_bind_once
  BEFORE INSERT OR UPDATE ON device_identities
  FOR EACH ROW EXECUTE FUNCTION device_identities_bind_once();

-- A device's platform is fixed at its first enrollment.
CREATE FUNCTION devices_platform_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.platform IS DISTINCT FROM OLD.platform THEN
    RAISE EXCEPTION 'device % is a % device', OLD.id, OLD.platform USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER devices_platform_fixed BEFORE UPDATE OF platform ON devices
  FOR EACH ROW EXECUTE FUNCTION devices_platform_fixed();

-- Windows DeviceIDs are GUIDs whose case differs between clients: enrollment finds a device by its id in any case.
CREATE INDEX devices_lower_id_idx ON devices (lower(id));

-- Live identities of a device (the takeover check reads these).
CREATE INDEX device_identities_live_idx ON device_identities (device_id, not_after) WHERE revoked_at IS NULL AND device_id IS NOT NULL;
