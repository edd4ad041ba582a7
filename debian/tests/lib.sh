# Shared by the autopkgtests (sourced, not a test).
# shellcheck shell=sh

# A container or VM starts the cluster when postgresql is installed; a
# chroot-like testbed has no init system, so start it here if needed.
start_cluster() {
    pg_lsclusters --no-header | while read -r version name _; do
        pg_ctlcluster "$version" "$name" status >/dev/null 2>&1 \
            || pg_ctlcluster "$version" "$name" start
    done
}

stop_cluster() {
    pg_lsclusters --no-header | while read -r version name _; do
        if pg_ctlcluster "$version" "$name" status >/dev/null 2>&1; then
            pg_ctlcluster "$version" "$name" stop
        fi
    done
}

psql_() {
    runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

# check WHAT ACTUAL EXPECTED
check() {
    if [ "$2" = "$3" ]; then
        echo "ok - $1"
    else
        echo "not ok - $1: got '$2', expected '$3'"
        exit 1
    fi
}
