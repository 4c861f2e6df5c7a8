#!/usr/bin/env bash
# Runs a command in a private network namespace that has loopback only, where the machine allows
# it (root, or unprivileged user namespaces): the tests then cannot reach anything off the machine,
# whatever a library tries. Elsewhere the command runs as is, with a note.
set -euo pipefail
if command -v unshare >/dev/null && command -v ip >/dev/null; then
  for how in "--net" "--net --map-root-user"; do
    # shellcheck disable=SC2086
    if unshare $how true 2>/dev/null; then
      # shellcheck disable=SC2016,SC2086
      exec unshare $how sh -c 'ip link set lo up && exec "$@"' sh "$@"
    fi
  done
fi
echo "note: no private network namespace here; the tests run with the machine's network" >&2
exec "$@"
