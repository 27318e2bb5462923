#!/bin/sh
# Keep a file's current version (or that it did not exist) until a switch succeeds; only the first
# deploy since the last successful switch records it.
# Arguments: PENDING_DIR FILE ABSENT_SUFFIX
pending=$1 target=$2 absent_suffix=$3
kept=$pending$target
absent=$kept$absent_suffix

install -d -m 0700 "${kept%/*}"
if [ ! -e "$kept" ] && [ ! -e "$absent" ]; then
  if [ -e "$target" ]; then cp -a "$target" "$kept"; else : > "$absent"; fi
fi
