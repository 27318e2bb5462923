#!/bin/sh
# Take this host's deploy lock, or fail naming who holds it (exit 75).
# Arguments: STATE_DIR LOCK_FILE HOLDER_FILE TIMEOUT HOLDER JOB_UNIT
#
# flock on a file: the lock dies with whoever holds it. A small process keeps it for as long as this
# deploy's SSH connection (the nearest sshd ancestor) lives, so a killed deployer never leaves it behind.
state_dir=$1 lock_file=$2 holder_file=$3 timeout=$4 holder=$5 job_unit=$6

install -d -m 0700 "$state_dir"
exec 9>> "$lock_file"
if ! flock -w "$timeout" 9; then
  echo "tailnix: another deploy holds the lock of this host after ${timeout}s of waiting: $(cat "$holder_file" 2>/dev/null || echo unknown)" >&2
  exit 75
fi
printf '%s\n' "$holder" > "$holder_file"
process=$$ connection=
while [ "$process" -gt 1 ]; do
  case "$(cat "/proc/$process/comm" 2>/dev/null)" in sshd|sshd-session) connection=$process; break ;; esac
  process=$(cut -d ' ' -f 4 "/proc/$process/stat" 2>/dev/null || echo 1)
done
# No sshd above: the connection ended already (the deployer was killed as this began), so only the switch
# job can still want the lock; `kill -0` of init or of our own group would hold it forever.
# The detached switch job holds it too: a deploy reconnecting to confirm keeps others out meanwhile.
( while { [ -n "$connection" ] && kill -0 "$connection" 2>/dev/null; } \
    || systemctl is-active --quiet "$job_unit" 2>/dev/null; do sleep 1; done ) \
  < /dev/null > /dev/null 2>&1 &
