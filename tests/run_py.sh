#!/bin/sh
# Runs one of the app-level Python suites (first argument, next to this
# script) with the system python3.
here="$(dirname "$0")"
script="$1"
shift
exec python3 "$here/$script" "$@"
