#!/bin/sh
# Wait until Tailscale is Running (at most TIMEOUT seconds), then print its status, prefs, the join
# unit's last journal lines and how the wait ended, each section after a `--- name` line.
# Arguments: TIMEOUT UNIT
#
# The wait ends early when control refused the login: the join unit UNIT has finished (it is no longer
# activating) and the node is NeedsLogin with a login error in its health ("You are logged out. The last
# login error was: ...", tailscale's LoginStateWarnable). Nothing logs the node in after that.
# `--- poll` prints `running`, `login-error` or `timeout`, and the number of polls.
#
# grep, not jq: a NixOS host may not have jq on its PATH.
timeout=$1 unit=$2

status="" ended=timeout polls=0
for _ in $(seq "$timeout"); do
  polls=$((polls + 1))
  status=$(tailscale status --json --peers=false 2>/dev/null)
  if printf '%s' "$status" | grep -q '"BackendState": *"Running"'; then ended=running; break; fi
  if printf '%s' "$status" | grep -q '"BackendState": *"NeedsLogin"' &&
    printf '%s' "$status" | grep -q 'The last login error was: ' &&
    [ "$(systemctl is-active "$unit" 2>/dev/null)" != activating ]; then
    ended=login-error
    break
  fi
  sleep 1
done
printf '%s\n' "$status"
echo "--- prefs"
tailscale debug prefs 2>/dev/null
echo "--- journal"
journalctl -u "$unit" -n 8 --no-pager 2>/dev/null | tail -n 8
echo "--- poll"
echo "$ended $polls"
true
