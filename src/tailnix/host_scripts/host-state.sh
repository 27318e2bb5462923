#!/bin/sh
# Everything a deploy compares, read in one round trip: the OS, the host key, the placed files' hashes,
# configuration.nix and flake.nix, the last switch, and the node's `tailscale status` and prefs.
# Lines are `key=value`, `sha256sum` lines, or a `--- name` line and the raw output of a command;
# missing things give empty or absent values, never a failed command. Built-ins where possible: every
# fork costs the host about a millisecond, on every host of the fleet.
# Arguments: SWITCH_WAIT RESULT_FILE JOB_UNIT HOST_KEY_FILE APPLIED_FILE PENDING_DIR NIXOS_DIR
#            SECRETS_FILE MODULE_FILE CONFIGURATION_FILE, then the placed files' names in NIXOS_DIR
switch_wait=$1 result_file=$2 job_unit=$3 host_key_file=$4 applied_file=$5 pending=$6 nixos_dir=$7
secrets=$8 module=$9 configuration=${10}
shift 10

# A switch job of an earlier deploy (killed, say) may still be running: it confirms or rolls back by
# itself, changing the very files read below. Wait for it first, bounded; the common case (its result
# says it ended) costs one built-in read.
line=; read -r line < "$result_file" 2>/dev/null
case "$line" in running\ *|switched\ *)
  waited=0
  while systemctl is-active --quiet "$job_unit" 2>/dev/null; do
    if [ "$waited" -ge "$switch_wait" ]; then echo switch_running=yes; break; fi
    sleep 1; waited=$((waited + 1))
  done
  echo "switch_waited=$waited"
  line=; read -r line < "$result_file" 2>/dev/null; echo "switch_result=$line" ;;
esac

ID='' VERSION_ID='' PRETTY_NAME=''
# The host's own file, for ID, VERSION_ID and PRETTY_NAME:
# shellcheck source=/dev/null
. /etc/os-release 2>/dev/null
echo "os_id=$ID"
echo "os_version=$VERSION_ID"
echo "os_name=$PRETTY_NAME"
line=; read -r line < "$host_key_file" 2>/dev/null; echo "host_key=$line"
line=; read -r line < "$applied_file" 2>/dev/null; echo "applied=$line"
[ -d "$pending" ] && echo pending=yes
[ -e "$nixos_dir/flake.nix" ] && echo flake=yes
command -v nix-instantiate > /dev/null && echo nix_instantiate=yes
sha256sum "$secrets" "$module" "$configuration" 2>/dev/null
printf configuration_b64=; base64 -w 0 "$configuration" 2>/dev/null; echo
printf flake_b64=; [ -e "$nixos_dir/flake.nix" ] && base64 -w 0 "$nixos_dir/flake.nix" 2>/dev/null; echo
if [ -d "$nixos_dir/.git" ]; then
  echo git=yes; printf git_tracked=; git -C "$nixos_dir" ls-files -- "$@" 2>/dev/null | tr "\n" " "; echo
fi
# The node's state rides along, so that verifying a fleet where nothing changed costs nothing more.
# Each JSON document goes on one line, its lines joined by the printf built-in (a JSON text holds no raw
# newline inside a string, so nothing else changes): the deployer reads output a line at a time, at a cost
# per line and host, and the two documents were most of the lines.
set -f
saved_ifs=$IFS
IFS='
'
echo "--- tailscale_status"
status=$(tailscale status --json --peers=false 2>/dev/null)
# shellcheck disable=SC2086 # split into lines on purpose, globbing off
printf '%s' $status; echo
echo "--- tailscale_prefs"
prefs=$(tailscale debug prefs 2>/dev/null)
# shellcheck disable=SC2086
printf '%s' $prefs; echo
IFS=$saved_ifs
set +f
true
