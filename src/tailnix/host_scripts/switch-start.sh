#!/bin/sh
# Write the switch job and start it detached from this SSH session, as a transient unit.
# Arguments: JOB_DIR RESULT_FILE CONFIRM_FILE JOB_FILE JOB_UNIT JOB_TEXT, then the job's own arguments
job_dir=$1 result_file=$2 confirm_file=$3 job_file=$4 job_unit=$5 job_text=$6
shift 6

install -d -m 0700 "$job_dir"
rm -f "$result_file" "$confirm_file"
printf '%s' "$job_text" > "$job_file"
chmod 0700 "$job_file"
systemd-run --unit="$job_unit" --description="tailnix switch" --collect --quiet \
  --setenv=PATH="$PATH" --setenv=HOME=/root /bin/sh "$job_file" "$@"
