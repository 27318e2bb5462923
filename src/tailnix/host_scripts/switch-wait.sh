#!/bin/sh
# Wait on the host, at most WAIT seconds, while the switch job TOKEN is running; then print its result
# line (empty when the file does not exist). One command instead of one per second: the deployer's cost of
# following a switch no longer grows with the switch's length.
# Arguments: RESULT_FILE TOKEN WAIT
result_file=$1 token=$2 wait=$3

waited=0
line=; read -r line < "$result_file" 2>/dev/null
while [ "$line" = "running $token" ] && [ "$waited" -lt "$wait" ]; do
  sleep 1
  waited=$((waited + 1))
  line=; read -r line < "$result_file" 2>/dev/null
done
printf '%s\n' "$line"
