#!/bin/sh
# mmdebstrap --customize-hook for the system-test roots (see roots.py): runs on the host
# with network, $1 = the new root.  Lists come from roots.py through the environment.
set -eu
root="$1"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"; }

# Everything the scenarios install, downloaded but NOT installed, with Recommends as a
# user's `apt install` (apt's default) would want them: the scenarios have no network.
# shellcheck disable=SC2086  # word splitting of the package list is wanted
in_root apt-get install --download-only -y -q -o APT::Install-Recommends=true $MSS_DOWNLOAD

# pip inside the root needs the host's CA bundle (TLS to PyPI may be intercepted here).
cp "$MSS_CA_BUNDLE" "$root/tmp/host-ca.crt"
pip_install() {
    venv=$1
    shift
    # Built with the root's own python3 (3.11 on bookworm, 3.13 on trixie).
    in_root python3 -m venv "$venv"
    in_root env PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        "$venv/bin/pip" install -q --no-cache-dir "$@"
}
# shellcheck disable=SC2086
pip_install /opt/venvs/matrix-synapse $MSS_SYNAPSE_PIP
# shellcheck disable=SC2086
pip_install /opt/venvs/judge $MSS_JUDGE_PIP
rm -f "$root/tmp/host-ca.crt"

# mmdebstrap roots have no /etc/hosts; Synapse and PostgreSQL resolve localhost.
cat > "$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
HOSTS
