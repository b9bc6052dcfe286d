#!/usr/bin/env bash
# Regenerate tests/data/kea/ with the real Kea: Debian's kea-dhcp4-server (2.2) serving leases to
# Debian's perfdhcp (package kea-admin) across a veth pair between two private network
# namespaces this script creates (10.99.0.0/24, nothing leaves the machine).
#
# Needs root, iproute2, and: apt-get install kea-dhcp4-server kea-admin
# Output (committed, so CI needs none of this):
#   kea/kea-leases4.csv   the memfile journal exactly as Kea wrote it
#   kea/kea-dhcp4.json    the server configuration used
#   kea/perfdhcp.txt      the perfdhcp command lines and their reports
#   kea/kea-hook.jsonl    what deploy/collectors/kea-run-script.sh wrote, called by Kea's own
#                         libdhcp_run_script.so at every hook point (format kea-hook)
#
# Traffic: 24 simulated clients do DORA; then renewals and releases; then the 20 s leases are
# left to expire, so the journal holds assigned (state 0), released (valid_lifetime 0) and
# expired-reclaimed (state 2) rows.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/kea
WORK=$(mktemp -d /tmp/ipanon-kea.XXXXXX)
SRV=ipkea-srv-$$
CLI=ipkea-cli-$$
KEA_PID=

cleanup() {
  [ -n "$KEA_PID" ] && kill "$KEA_PID" 2>/dev/null && wait "$KEA_PID" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v kea-dhcp4 >/dev/null || { echo "kea-dhcp4 missing: apt-get install kea-dhcp4-server" >&2; exit 1; }
command -v perfdhcp >/dev/null || { echo "perfdhcp missing: apt-get install kea-admin" >&2; exit 1; }

ip netns add "$SRV"
ip netns add "$CLI"
ip link add ipk-srv netns "$SRV" type veth peer name ipk-cli netns "$CLI"
ip -n "$SRV" addr add 10.99.0.1/24 dev ipk-srv
ip -n "$CLI" addr add 10.99.0.2/24 dev ipk-cli
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set ipk-srv up
ip -n "$CLI" link set ipk-cli up

HOOKLIB=$(dpkg -L kea-common 2>/dev/null | grep -m1 'libdhcp_run_script.so$' || true)
[ -n "$HOOKLIB" ] || { echo "libdhcp_run_script.so not found (Debian package kea-common)" >&2; exit 1; }

# Kea runs the hook script with an empty environment: a wrapper sets the spool path
printf '#!/bin/sh\nIPANON_KEA_SPOOL=%s/kea-hook.jsonl exec %s "$@"\n' "$WORK" \
  "$(cd "$HERE/../../deploy/collectors" && pwd)/kea-run-script.sh" > "$WORK/hook.sh"
chmod +x "$WORK/hook.sh"

cat > "$WORK/kea-dhcp4.json" <<JSON
{
  "Dhcp4": {
    "interfaces-config": { "interfaces": [ "ipk-srv" ], "dhcp-socket-type": "raw" },
    "lease-database": { "type": "memfile", "persist": true, "lfc-interval": 0,
                        "name": "$WORK/kea-leases4.csv" },
    "valid-lifetime": 20, "renew-timer": 8, "rebind-timer": 15,
    "expired-leases-processing": { "reclaim-timer-wait-time": 1, "hold-reclaimed-time": 3600,
                                   "flush-reclaimed-timer-wait-time": 0 },
    "subnet4": [ { "id": 1, "subnet": "10.99.0.0/24",
                   "pools": [ { "pool": "10.99.0.100 - 10.99.0.199" } ] } ],
    "hooks-libraries": [ { "library": "$HOOKLIB",
                           "parameters": { "name": "$WORK/hook.sh",
                                           "sync": true } } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "INFO",
                   "output_options": [ { "output": "$WORK/kea-dhcp4.log" } ] } ]
  }
}
JSON

export KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK
ip netns exec "$SRV" kea-dhcp4 -c "$WORK/kea-dhcp4.json" &
KEA_PID=$!
for _ in $(seq 50); do [ -s "$WORK/kea-leases4.csv" ] && break; sleep 0.1; done
sleep 1

{
  echo "# perfdhcp -4 -l ipk-cli -R 24 -r 12 -n 24 -b mac=02:00:00:00:00:00"
  ip netns exec "$CLI" perfdhcp -4 -l ipk-cli -R 24 -r 12 -n 24 -b mac=02:00:00:00:00:00 -W 2000000 2>&1 || true
  echo "# perfdhcp -4 -l ipk-cli -R 24 -r 4 -f 2 -F 2 -p 4 -b mac=02:00:00:00:00:00"
  ip netns exec "$CLI" perfdhcp -4 -l ipk-cli -R 24 -r 4 -f 2 -F 2 -p 4 -b mac=02:00:00:00:00:00 -W 2000000 2>&1 || true
} > "$WORK/perfdhcp.txt"

# let the 20 s leases run out and be reclaimed (state 2 rows)
sleep 26
kill "$KEA_PID"; wait "$KEA_PID" 2>/dev/null || true; KEA_PID=

mkdir -p "$OUT"
cp "$WORK/kea-leases4.csv" "$OUT/kea-leases4.csv"
sed -e "s#$WORK/hook.sh#/usr/local/sbin/ipanon-kea-hook.sh#" -e "s#$WORK#/var/lib/kea#g" "$WORK/kea-dhcp4.json" > "$OUT/kea-dhcp4.json"
cp "$WORK/perfdhcp.txt" "$OUT/perfdhcp.txt"
cp "$WORK/kea-hook.jsonl" "$OUT/kea-hook.jsonl"
echo "wrote $(($(wc -l < "$OUT/kea-leases4.csv") - 1)) lease rows to $OUT/kea-leases4.csv"
