#!/bin/sh
# Test-only policy-rc.d of the system-test roots: there is no init system here, and
# only the services the scenarios need may start (invoke-rc.d asks this script).
case "$1" in
    postgresql|postgresql@*|matrix-synapse|matrix-synapse.service) exit 0 ;;
esac
exit 101
