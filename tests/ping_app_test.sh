#!/bin/sh
# Runs ursa-ping's test with the system python3.
exec python3 "$(dirname "$0")/ping_app_test.py" "$1"
