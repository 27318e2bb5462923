#!/bin/sh
# Wait on the host, at most WAIT seconds, while the switch job TOKEN is running; then print its result
# line (empty when the file does not exist). One command instead of one per second: the deployer's cost of
# following a switch no longer grows with the switch's length.
# A job whose unit has ended (inactive or failed) while its line still says running was stopped or killed
# before it wrote its result (`systemctl stop`, the OOM killer): then the line is read once more (a job
# writes its result before it exits) and, if it still says running, `gone TOKEN` is printed instead. The
# unit is asked every 5 seconds, not every second: a systemctl call costs more than a read.
# Arguments: RESULT_FILE TOKEN WAIT JOB_UNIT
result_file=$1 token=$2 wait=$3 job_unit=$4

check_every=5

waited=0
line=; read -r line < "$result_file" 2>/dev/null
while [ "$line" = "running $token" ] && [ "$waited" -lt "$wait" ]; do
  if [ $((waited % check_every)) -eq 0 ]; then
    # Not `is-active --quiet`: a unit still activating or being stopped has not ended yet.
    case "$(systemctl is-active "$job_unit" 2>/dev/null)" in
      inactive | failed)
        line=; read -r line < "$result_file" 2>/dev/null
        [ "$line" = "running $token" ] && line="gone $token"
        break
        ;;
    esac
  fi
  sleep 1
  waited=$((waited + 1))
  line=; read -r line < "$result_file" 2>/dev/null
done
printf '%s\n' "$line"
