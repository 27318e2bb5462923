#!/bin/sh
# tailnix's switch job, run detached (systemd-run) so that a cut SSH session cannot stop it halfway:
# switch, then wait for the deployer's confirmation over a new SSH connection, or roll back.
# Its result is one line in RESULT_FILE: running, switched, confirmed, failed or rolled-back, and TOKEN.
# Arguments: TOKEN FINGERPRINT CONFIRM_TIMEOUT FLAKE FLAKE_ATTR RESULT_FILE LOG_FILE CONFIRM_FILE
#            APPLIED_FILE PENDING_DIR NIXOS_DIR CONFIGURATION_FILE ABSENT_SUFFIX ABSENT_DIRECTORY_SUFFIX
# FLAKE is `yes` for a host configured by NIXOS_DIR/flake.nix; FLAKE_ATTR empty means its hostname.
set -u
token=$1 fingerprint=$2 confirm_timeout=$3 flake=$4 flake_attr=$5 result_file=$6 log_file=$7
confirm_file=$8 applied_file=$9 pending=${10} nixos_dir=${11} configuration=${12}
absent_suffix=${13} absent_directory_suffix=${14}

say() { printf '%s\n' "$*" > "$result_file.new" && mv -f "$result_file.new" "$result_file"; }

# Units failed before the switch that failed again: not this deploy's failure (read by the deployer).
already_failed_file="${result_file%/*}/already-failed"

# Put back every file the deploy changed (PENDING_DIR holds the originals, or marks that there was none).
restore() {
  [ -d "$pending" ] || return 0
  (cd "$pending" && find . -type f) | while read -r kept; do
    target="/${kept#./}"
    case "$target" in
      *"$absent_directory_suffix") ;;
      *"$absent_suffix")
        rm -f "${target%"$absent_suffix"}"
        if [ -d "$nixos_dir/.git" ]; then
          relative="${target%"$absent_suffix"}"
          git -C "$nixos_dir" rm -q --cached --ignore-unmatch -- "${relative#"$nixos_dir"/}" 2>/dev/null
        fi
        ;;
      *)
        # A directory the change removed (retire's secrets directory) comes back first.
        [ -d "${target%/*}" ] || install -d -m 0700 "${target%/*}"
        cp -a "$pending/${kept#./}" "$target"
        ;;
    esac
  done
  (cd "$pending" && find . -type f -name "*$absent_directory_suffix") | while read -r kept; do
    target="/${kept#./}"
    rmdir "${target%"$absent_directory_suffix"}" 2>/dev/null
  done
  rm -rf "$pending"
}

# switch-to-configuration exits 4 for every unit failed at the end of a switch, also one that was failed
# before and was only retried (nixpkgs switch-to-configuration-ng src/main.rs), and for a start systemd
# refused (`Failed to start UNIT: ...`, a restartUnits name that does not exist). Split its report into the
# units this switch made fail (caused) and the ones failed before it (already).
failed_units() {
  systemctl list-units --state=failed --plain --no-legend 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' '
}
split_failures() {
  caused=""
  already=""
  reported=$(sed -n 's/^warning: the following units failed: //p' "$log_file" | tr -d ',')
  refused=$(sed -n 's/^Failed to [a-z-]* \([^:]*\): .*/\1/p' "$log_file")
  for unit in $reported; do
    case " $failed_before " in
      *" $unit "*) already="${already:+$already }$unit" ;;
      *) caused="${caused:+$caused }$unit" ;;
    esac
  done
  for unit in $refused; do caused="${caused:+$caused }$unit"; done
  [ -n "$reported$refused" ] || caused="unknown units (see $log_file)"
}

rebuild() {
  if [ "$flake" = yes ]; then
    # flake.lock is the user's: a deploy never updates it.
    nixos-rebuild switch --flake "$nixos_dir#${flake_attr:-$(hostname)}" --no-update-lock-file
  else
    nixos-rebuild switch
  fi
}

say running "$token"
rm -f "$already_failed_file"
if ! nix-instantiate --parse "$configuration" > /dev/null 2> "$log_file"; then
  restore
  say failed "$token" 1 the edited configuration.nix does not parse
  exit 1
fi
before=$(readlink /run/current-system)
failed_before=$(failed_units)
rebuild > "$log_file" 2>&1
status=$?
caused="" already=""
if [ "$status" -eq 4 ]; then
  split_failures
  if [ -z "$caused" ]; then
    # Only units that were failed before the switch failed again: not this deploy's doing; it is kept.
    printf '%s\n' "$already" > "$already_failed_file"
    status=0
  fi
fi
if [ "$status" -ne 0 ]; then
  case "$status" in
    1) reason="the configuration did not evaluate or build" ;;
    2) reason="activation failed" ;;
    4) reason="a unit failed to start; failed in this switch: $caused${already:+; already failed before it: $already}" ;;
    *) reason="unexpected exit" ;;
  esac
  restore
  if [ -n "$before" ] && [ "$(readlink /run/current-system)" != "$before" ]; then
    # The new generation became active before the failure: go back to the one that ran before.
    nixos-rebuild switch --rollback >> "$log_file" 2>&1
    say failed "$token" "$status" "$reason; /etc/nixos restored and the previous generation switched back"
  else
    say failed "$token" "$status" "$reason; /etc/nixos restored"
  fi
  exit "$status"
fi
say switched "$token"
# Magic rollback: the deployer must reach the host over a new SSH connection and confirm in time. It may
# also refuse the switch (`refuse TOKEN` and a line saying why): the host then rolls back at once.
waited=0
while [ "$(sed -n 1p "$confirm_file" 2>/dev/null)" != "$token" ]; do
  if [ "$(sed -n 1p "$confirm_file" 2>/dev/null)" = "refuse $token" ]; then
    restore
    nixos-rebuild switch --rollback >> "$log_file" 2>&1
    say rolled-back "$token" "$(sed -n 2p "$confirm_file")"
    exit 1
  fi
  if [ "$waited" -ge $((confirm_timeout * 2)) ]; then
    restore
    nixos-rebuild switch --rollback >> "$log_file" 2>&1
    say rolled-back "$token" "no confirmation over a new SSH connection within ${confirm_timeout}s"
    exit 1
  fi
  sleep 0.5
  waited=$((waited + 1))
done
printf '%s\n' "$fingerprint" > "$applied_file.new" && mv -f "$applied_file.new" "$applied_file"
rm -rf "$pending"
say confirmed "$token"
