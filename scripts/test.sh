#!/usr/bin/env bash
# `npm test`: the whole suite on SQLite (the embedded default), then the tests of the storage
# domains again on PostgreSQL, each test server with a fresh database in one throwaway cluster
# (LATCHKEY_TEST_BACKEND=postgres; test/support.ts). Arguments go to both runs (e.g. a reporter);
# file filters given as arguments select what runs on SQLite only.
set -u
files=()
for arg in "$@"; do [[ "$arg" == test/* || "$arg" == ./test/* ]] && files+=("$arg"); done
bun test --timeout 60000 "$@"
sqlite=$?
[ ${#files[@]} -gt 0 ] && exit $sqlite
options=()
for arg in "$@"; do [[ "$arg" == test/* || "$arg" == ./test/* ]] || options+=("$arg"); done
LATCHKEY_TEST_BACKEND=postgres bun test --timeout 60000 "${options[@]}" \
  test/access-control.test.ts test/auth.test.ts test/sessions.test.ts test/licensing.test.ts test/licensing-race.test.ts \
  test/enrollment.test.ts test/enrollment-race.test.ts test/key-cli.test.ts test/client-csr.test.ts test/hosts-api.test.ts \
  test/user-certificates.test.ts test/stats.test.ts test/ops.test.ts
postgres=$?
[ $sqlite -eq 0 ] && [ $postgres -eq 0 ]
