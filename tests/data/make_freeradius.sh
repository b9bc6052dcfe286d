#!/usr/bin/env bash
# Regenerate tests/data/freeradius/ with the real FreeRADIUS: Debian's freeradius (3.2) receives
# accounting packets from Debian's radclient (freeradius-utils) on the loopback of a private
# network namespace this script creates, and writes its detail file.
#
# Needs root, iproute2, and: apt-get install freeradius freeradius-utils
# Usage: make_freeradius.sh [all|detail|sample]   (default all)
# Output (committed, so CI needs none of this):
#   freeradius/detail            the detail file exactly as FreeRADIUS wrote it (radclient-input.txt)
#   freeradius/radclient.txt     radclient's report
#   freeradius/sample-detail     one dual-stack session (sample-input.txt), server in UTC
#   freeradius/sample-radclient.txt
# For detail the server runs with TZ=Europe/Stockholm, so the header lines and Event-Timestamp
# values are rendered in CEST, as on a server in Sweden.  Traffic (radclient-input.txt, sent one packet
# at a time in file order): Accounting-On; an IPv4 session Start/Interim/Stop; a dual-stack
# session with Framed-IPv6-Prefix and Delegated-IPv6-Prefix; re-use of the first session's
# address by another subscriber; an IPv6-only session on a second NAS; Accounting-Off.
# sample-detail (TZ=UTC): Start/Interim/Stop of one session with an IPv4 address, a
# Framed-IPv6-Prefix and a Delegated-IPv6-Prefix (tests/unit/parse/test_samples.py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/freeradius
WORK=$(mktemp -d /tmp/ipanon-fr.XXXXXX)
NS=ipfr-$$
FR_PID=

cleanup() {
  [ -n "$FR_PID" ] && kill "$FR_PID" 2>/dev/null && wait "$FR_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v freeradius >/dev/null || { echo "freeradius missing: apt-get install freeradius" >&2; exit 1; }
command -v radclient >/dev/null || { echo "radclient missing: apt-get install freeradius-utils" >&2; exit 1; }

# a private copy of Debian's configuration, writing under $WORK, running as root
cp -a /etc/freeradius/3.0 "$WORK/raddb"
mkdir -p "$WORK/log" "$WORK/radacct" "$WORK/run"
sed -i -e "s#^\(\s*logdir\s*=\).*#\1 $WORK/log#" \
       -e "s#^\(\s*radacctdir\s*=\).*#\1 $WORK/radacct#" \
       -e "s#^\(\s*run_dir\s*=\).*#\1 $WORK/run#" \
       -e "s#^\(\s*user\s*=\s*freerad\)#\#\1#" -e "s#^\(\s*group\s*=\s*freerad\)#\#\1#" \
       "$WORK/raddb/radiusd.conf"


# run FREERADIUS_TZ INPUT DETAIL_OUT REPORT_OUT: one server, one radclient run, one detail file
run() {
  local tz=$1 input=$2 detail=$3 report=$4
  rm -rf "$WORK/radacct" && mkdir -p "$WORK/radacct"
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip netns exec "$NS" env TZ="$tz" freeradius -f -d "$WORK/raddb" -l "$WORK/radiusd.log" &
  FR_PID=$!
  for _ in $(seq 100); do
    ip netns exec "$NS" ss -uln 2>/dev/null | grep -q ':1813 ' && break
    sleep 0.1
  done
  ip netns exec "$NS" radclient -p 1 -r 3 -t 2 -f "$input" 127.0.0.1:1813 acct testing123 \
    > "$WORK/radclient.txt" 2>&1
  sleep 0.5
  kill "$FR_PID"; wait "$FR_PID" 2>/dev/null || true; FR_PID=
  ip netns del "$NS"
  mkdir -p "$OUT"
  cat "$WORK"/radacct/*/detail-* > "$detail"
  cp "$WORK/radclient.txt" "$report"
  echo "wrote $(grep -c '^\s*Acct-Status-Type' "$detail") records to $detail"
}

what=${1:-all}
case $what in all|detail|sample) ;; *) echo "usage: $0 [all|detail|sample]" >&2; exit 2 ;; esac
if [ "$what" != sample ]; then
  run Europe/Stockholm "$OUT/radclient-input.txt" "$OUT/detail" "$OUT/radclient.txt"
fi
if [ "$what" != detail ]; then
  run UTC "$OUT/sample-input.txt" "$OUT/sample-detail" "$OUT/sample-radclient.txt"
fi
