-- The hot paths of several nodes on one database: the change feed narrowed, and activations in one
-- round trip.
--
-- The change feed (migration 0010), narrowed to the changes other nodes act on. A commit that
-- sends a notification holds PostgreSQL's cluster-wide notify lock through its WAL flush, so
-- notifying commits queue one behind another: the hot writes must not notify. None of them changes
-- what another node caches or re-checks its connections against:
--   - a new activation (a check looks a machine without one up again each time) and a key's seat
--     and activation counters;
--   - a new key or license (nothing is cached for what does not exist);
--   - a pending enrollment key becoming active, and its use counters;
--   - a user's last login time.
-- Removals, revocations, resets and admins' edits still notify. The function is the same; row
-- triggers with a WHEN clause call it only for the changes that matter (PostgreSQL sends one
-- notification per channel and payload per transaction however often it is called).
DROP TRIGGER licenses_changed ON licenses;
CREATE TRIGGER licenses_removed AFTER DELETE ON licenses
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER licenses_changed AFTER UPDATE ON licenses FOR EACH ROW
WHEN ((OLD.app_id, OLD.token_hash, OLD.activations_allowed, OLD.enabled, OLD.memo, OLD.expires_at)
  IS DISTINCT FROM (NEW.app_id, NEW.token_hash, NEW.activations_allowed, NEW.enabled, NEW.memo, NEW.expires_at))
EXECUTE FUNCTION latchkey_changed();

DROP TRIGGER activations_changed ON activations;
CREATE TRIGGER activations_changed AFTER DELETE ON activations
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();

DROP TRIGGER enrollment_keys_changed ON enrollment_keys;
CREATE TRIGGER enrollment_keys_removed AFTER DELETE ON enrollment_keys
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER enrollment_keys_changed AFTER UPDATE ON enrollment_keys FOR EACH ROW
WHEN (NOT (OLD.status = 'pending' AND NEW.status = 'active')
  AND (OLD.key_hash, OLD.status, OLD.client_uuid, OLD.client_group, OLD.expires_at)
    IS DISTINCT FROM (NEW.key_hash, NEW.status, NEW.client_uuid, NEW.client_group, NEW.expires_at))
EXECUTE FUNCTION latchkey_changed();

DROP TRIGGER users_changed ON users;
CREATE TRIGGER users_added_or_removed AFTER INSERT OR DELETE ON users
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER users_changed AFTER UPDATE ON users FOR EACH ROW
WHEN ((OLD.username, OLD.role, OLD.allowed_groups, OLD.password_hash, OLD.scram_stored_key, OLD.legacy_hash,
    OLD.password_changed_at, OLD.credential_version)
  IS DISTINCT FROM (NEW.username, NEW.role, NEW.allowed_groups, NEW.password_hash, NEW.scram_stored_key, NEW.legacy_hash,
    NEW.password_changed_at, NEW.credential_version))
EXECUTE FUNCTION latchkey_changed();

-- An activation's transaction in one call (LicenseStore.activateMachine; SQLite runs the same
-- steps as statements): the key's row is locked, the machine's activation inserted unless it has
-- one (the conditional INSERT decides), a seat taken (the conditional UPDATE decides), and the
-- audit entry written. A key's activations queue on its row; in one call the row is held for the
-- statements' own time, not for round trips to a busy node. The commit does not wait for the disk
-- (the row is let go at once); the caller then waits for the disk with a durable transaction of
-- its own, whose flush covers this commit (Sql.flush). Outcomes: 'new' and 'again' with the key's
-- seats after it, 'full' (nothing written: no seat left and the machine holds none) and 'gone' (no
-- such key). The audit entry's action and outcome are this function's: license.activate, success.
CREATE FUNCTION latchkey_activate(p_license bigint, p_hwid text, p_machine text, p_user text, p_address text, p_now bigint,
  p_audit_at bigint, p_reason_new text, p_reason_again text)
RETURNS TABLE (outcome text, activations_allowed bigint, activations_used bigint, expires_at bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_allowed bigint;
  v_used bigint;
  v_activation bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT l.activations_allowed, l.activations_used INTO v_allowed, v_used FROM licenses l WHERE l.id = p_license FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'gone'::text, NULL::bigint, NULL::bigint, NULL::bigint;
    RETURN;
  END IF;
  IF v_allowed <> -1 AND v_used >= v_allowed
     AND NOT EXISTS (SELECT 1 FROM activations a WHERE a.license_id = p_license AND a.hwid = p_hwid) THEN
    RETURN QUERY SELECT 'full'::text, NULL::bigint, NULL::bigint, NULL::bigint;
    RETURN;
  END IF;
  INSERT INTO activations (license_id, hwid, machine, "user", address, created_at)
  VALUES (p_license, p_hwid, p_machine, p_user, p_address, p_now)
  ON CONFLICT (license_id, hwid) DO NOTHING RETURNING id INTO v_activation;
  IF v_activation IS NULL THEN
    UPDATE activations a SET machine = coalesce(p_machine, a.machine), "user" = coalesce(p_user, a."user"),
      address = coalesce(p_address, a.address)
    WHERE a.license_id = p_license AND a.hwid = p_hwid;
    INSERT INTO audit (at, actor, address, action, target, outcome, reason)
    VALUES (p_audit_at, NULL, p_address, 'license.activate', 'license ' || p_license, 'success', p_reason_again);
    RETURN QUERY UPDATE licenses l SET total_activations = l.total_activations + 1, last_activation_at = p_now,
        last_activation_address = p_address
      WHERE l.id = p_license
      RETURNING 'again'::text, l.activations_allowed, l.activations_used, l.expires_at;
    RETURN;
  END IF;
  RETURN QUERY UPDATE licenses l SET activations_used = l.activations_used + 1, total_activations = l.total_activations + 1,
      last_activation_at = p_now, last_activation_address = p_address
    WHERE l.id = p_license AND (l.activations_allowed = -1 OR l.activations_used < l.activations_allowed)
    RETURNING 'new'::text, l.activations_allowed, l.activations_used, l.expires_at;
  IF NOT FOUND THEN
    -- Not possible under the key's lock after the check above; were it, the insert must not stay.
    RAISE EXCEPTION 'no seat left on license %', p_license;
  END IF;
  INSERT INTO audit (at, actor, address, action, target, outcome, reason)
  VALUES (p_audit_at, NULL, p_address, 'license.activate', 'license ' || p_license, 'success', p_reason_new);
END;
$$;
