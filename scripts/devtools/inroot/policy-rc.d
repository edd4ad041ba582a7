#!/bin/sh
# Test-only policy-rc.d of the system-test roots, asked by invoke-rc.d and
# deb-systemd-invoke (never by systemd itself, nor by a plain systemctl): only the
# services the scenarios need may be started or stopped by maintainer scripts.  The
# actions listed in /etc/mss-test/policy-rc.d.deny, one a line (steps.policy_rc_d writes
# it), are refused for Synapse's services (its unit, its workers' and their target), as an
# admin's policy-rc.d would.  Redis and nginx run where the workers' scenarios need them.
#   policy-rc.d [--quiet] ID ACTIONS [RUNLEVEL]    (ID: matrix-synapse or a unit name)
deny=/etc/mss-test/policy-rc.d.deny
while [ $# -gt 0 ]; do
    case "$1" in
        --*) shift ;;
        *) break ;;
    esac
done
id=${1:-}
actions=${2:-}
case "$id" in
    matrix-synapse|matrix-synapse.service|matrix-synapse.target|matrix-synapse-worker@*)
        if [ -r "$deny" ]; then
            for action in $actions; do
                # invoke-rc.d asks "(start)" for an action it would do only if allowed.
                action=${action#\(}
                action=${action%\)}
                if grep -qxF -- "$action" "$deny"; then
                    exit 101
                fi
            done
        fi
        exit 0 ;;
    postgresql|postgresql.service|postgresql@*) exit 0 ;;
    redis-server|redis-server.service|redis-server@*|valkey-server|valkey-server.service|valkey-server@*) exit 0 ;;
    nginx|nginx.service) exit 0 ;;
esac
exit 101
