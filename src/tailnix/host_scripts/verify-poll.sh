#!/bin/sh
# Wait until Tailscale is Running (at most TIMEOUT seconds), then print its status, prefs and the
# join unit's last journal lines, each section after a `--- name` line.
# Arguments: TIMEOUT UNIT
#
# grep, not jq: a NixOS host may not have jq on its PATH.
timeout=$1 unit=$2

status=""
for _ in $(seq "$timeout"); do
  status=$(tailscale status --json --peers=false 2>/dev/null)
  if printf '%s' "$status" | grep -q '"BackendState": *"Running"'; then break; fi
  sleep 1
done
printf '%s\n' "$status"
echo "--- prefs"
tailscale debug prefs 2>/dev/null
echo "--- journal"
journalctl -u "$unit" -n 8 --no-pager 2>/dev/null | tail -n 8
true
