#!/bin/sh
# Kea run_script hook → one JSON line per call, for `ipanon produce --format kea-hook --follow`.
#
# Kea's libdhcp_run_script.so (open source, in Debian's kea 2.2) runs this script at every hook
# point with the hook name as $1 and the lease data in environment variables (LEASE4_ADDRESS,
# LEASE4_HWADDR, LEASE4_CLTT, LEASE4_VALID_LIFETIME, LEASES4_SIZE, LEASES4_AT0_*, DELETED_LEASES4_*,
# and the LEASE6_* / LEASES6_* equivalents).  This script appends
#   {"hook":"lease4_renew","ts_ms":"1718000000123","LEASE4_ADDRESS":"10.0.0.5",…}
# to a spool file and returns at once: Kea waits for the script when "sync" is true, so it must
# never block on the network.  Ship the spool with
#   ipanon produce --format kea-hook --operator OP --follow /var/lib/kea/ipanon-hook.jsonl
# and rotate it with logrotate (`create`, not copytruncate).
#
# Only lease variables are copied (QUERY4_*/PKT4_* hold whole packets and are not needed).
# Values are JSON-escaped (backslash and double quote; Kea's hostnames may contain either).
# Kea starts the script with an EMPTY environment: edit SPOOL here, or call this script from a
# wrapper that sets IPANON_KEA_SPOOL (tests/data/make_kea.sh does that).
SPOOL=${IPANON_KEA_SPOOL:-/var/lib/kea/ipanon-hook.jsonl}
umask 077
ts_ms=$(date +%s%3N)
{
  printf '{"hook":"%s","ts_ms":"%s"' "$1" "$ts_ms"
  env | grep -E '^(DELETED_)?LEASES?[46]_' | while IFS='=' read -r k v; do
    v=$(printf '%s' "$v" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
    printf ',"%s":"%s"' "$k" "$v"
  done
  printf '}\n'
} | {
  # one write(2) per line: appends from concurrent Kea threads do not interleave
  line=$(cat); printf '%s\n' "$line" >> "$SPOOL"
}
exit 0
