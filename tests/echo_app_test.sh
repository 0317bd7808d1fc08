#!/bin/sh
# Runs the echo example's end-to-end test with the system python3.
exec python3 "$(dirname "$0")/echo_app_test.py" "$1"
