#!/bin/sh
# Fail, with Nix's own words, when configuration.nix does not parse before tailnix edits it.
# Arguments: CONFIGURATION_FILE
configuration=$1

if ! error=$({ nix-instantiate --parse "$configuration" > /dev/null; } 2>&1); then
  echo "tailnix: $configuration does not parse as it is, so it was not touched; fix it first:" >&2
  echo "$error" >&2
  exit 1
fi
