-- A client's registration in one call (EnrollmentStore.register; SQLite runs the same steps as
-- statements, in the same order). Every step is the one a registration made in its own round trip
-- before: ten statements, each waiting for a busy node, now one.
--
--  1. `require_auth_key` is read as it is now: a change applies to the very next registration.
--  2. With it on, the key sent (found by the hash of its normalized form; p_with_key false when no
--     key was sent, p_key_hash null when it is not a well-formed key) is locked. Revoked, unknown,
--     or pending past its expiry: 'invalid_key'. Active for another client: 'key_in_use' within
--     p_key_in_use_ms of its binding (a machine that raced the winner), 'bound_elsewhere' after.
--     Active for this client: a reconnect, even past the key's expiry.
--  3. The client's presence is claimed for this node, unless a node whose lease runs at
--     p_lease_now holds it: 'already_connected' (a clone there). Nothing is written before this.
--  4. The key is bound (pending -> active) or its reuse counted; the statements are conditional,
--     and under the key's lock they cannot miss, so a miss is raised as the bug it would be.
--  5. The client row is inserted or updated, and the audit entry written.
--
-- Racing registrations of one pending key queue on its row lock; the first binds it, the others
-- then read it active and are refused. The commit does not wait for the disk, so the key's row is
-- let go at once; the caller waits for the disk with Sql.flush before it answers.
CREATE FUNCTION latchkey_register(p_uuid text, p_claim text, p_node text, p_lease_now bigint, p_with_key boolean,
  p_key_hash text, p_name text, p_hostname text, p_version text, p_os text, p_address text, p_now bigint,
  p_key_in_use_ms bigint)
RETURNS TABLE (outcome text, reconnect boolean, key_id bigint, key_group text, client_group text, audit_reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_required boolean;
  k enrollment_keys%ROWTYPE;
  v_reconnect boolean := true;
  v_group text;
  v_reason text;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT s.value = 'true' INTO v_required FROM settings s WHERE s.key = 'require_auth_key';
  IF coalesce(v_required, false) THEN
    IF NOT p_with_key THEN
      RETURN QUERY SELECT 'auth_required'::text, NULL::boolean, NULL::bigint, NULL::text, NULL::text, NULL::text;
      RETURN;
    END IF;
    SELECT * INTO k FROM enrollment_keys e WHERE e.key_hash = p_key_hash FOR UPDATE;
    IF NOT FOUND OR k.status = 'revoked' OR (k.status = 'pending' AND k.expires_at IS NOT NULL AND p_now >= k.expires_at) THEN
      RETURN QUERY SELECT 'invalid_key'::text, NULL::boolean, k.id, k.client_group, NULL::text, NULL::text;
      RETURN;
    END IF;
    IF k.status = 'active' AND k.client_uuid IS DISTINCT FROM p_uuid THEN
      RETURN QUERY SELECT CASE WHEN k.first_used_at IS NOT NULL AND p_now - k.first_used_at < p_key_in_use_ms
          THEN 'key_in_use' ELSE 'bound_elsewhere' END, NULL::boolean, k.id, k.client_group, NULL::text, NULL::text;
      RETURN;
    END IF;
    v_reconnect := k.status = 'active';
  END IF;

  INSERT INTO client_presence AS p (uuid, node_id, claim, since) VALUES (p_uuid, p_node, p_claim, p_lease_now)
  ON CONFLICT (uuid) DO UPDATE SET node_id = excluded.node_id, claim = excluded.claim, since = excluded.since
  WHERE p.node_id = excluded.node_id
     OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = p.node_id AND n.lease_until > p_lease_now);
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'already_connected'::text, NULL::boolean, k.id, k.client_group, NULL::text, NULL::text;
    RETURN;
  END IF;

  IF k.id IS NOT NULL THEN
    IF v_reconnect THEN
      UPDATE enrollment_keys e SET usage_count = e.usage_count + 1, last_used_at = p_now
      WHERE e.id = k.id AND e.status = 'active' AND e.client_uuid = p_uuid;
    ELSE
      UPDATE enrollment_keys e SET status = 'active', client_uuid = p_uuid, first_used_at = p_now, last_used_at = p_now,
        usage_count = e.usage_count + 1
      WHERE e.id = k.id AND e.status = 'pending';
    END IF;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'enrollment key % changed under its lock', k.id;
    END IF;
    v_reason := 'key ' || k.id || CASE WHEN v_reconnect THEN ' (reconnect)' ELSE ' bound' END;
  ELSE
    v_reason := 'no key required';
  END IF;

  INSERT INTO clients AS c (uuid, name, hostname, client_group, key_id, version, os, address, first_seen_at, last_seen_at)
  VALUES (p_uuid, p_name, p_hostname, k.client_group, k.id, p_version, p_os, p_address, p_now, p_now)
  ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, hostname = excluded.hostname,
    client_group = coalesce(excluded.client_group, c.client_group), key_id = coalesce(excluded.key_id, c.key_id),
    version = excluded.version, os = excluded.os, address = excluded.address, last_seen_at = excluded.last_seen_at
  RETURNING c.client_group INTO v_group;

  INSERT INTO audit (at, actor, address, action, target, outcome, reason)
  VALUES (p_now, 'client:' || p_uuid, p_address, 'client.register', p_uuid, 'success', v_reason);

  RETURN QUERY SELECT 'registered'::text, v_reconnect, k.id, k.client_group, v_group, v_reason;
END;
$$;
