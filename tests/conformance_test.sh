#!/bin/sh
# Runs the server conformance suite with the system python3.
exec python3 "$(dirname "$0")/conformance_test.py" "$@"
