"""The names and places every part of the package agrees on, each defined once.

Shell copies exist where our Python is not there to ask (debian/postrm, debian/config);
everything in the runtime takes them from here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "matrix-synapse-setup"
# The Synapse service's user (both Synapse packages create it).
SYNAPSE_USER = "matrix-synapse"
# Where Debian's PostgreSQL clusters put their Unix sockets (postgresql-common).
POSTGRESQL_SOCKET_DIR = "/var/run/postgresql"
# The PATH of the programs we start with an environment of our own.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Synapse's configuration: homeserver.yaml, then every *.yaml in conf.d.
SYNAPSE_ETC = Path("/etc/matrix-synapse")
SYNAPSE_CONFD = SYNAPSE_ETC / "conf.d"
# Synapse's database snippet, and the password file it names (files/snippet.py).
SNIPPET = SYNAPSE_CONFD / "database.yaml"
PASSFILE = SYNAPSE_CONFD / "database.pgpass"
# Synapse's workers (synapse/workers.py): one file per worker, the snippet they share
# with the main process, the two secrets, and the nginx include of the client preset.
WORKERS_DIR = SYNAPSE_ETC / "workers"
WORKERS_SNIPPET = SYNAPSE_CONFD / "workers.yaml"
REPLICATION_SECRET = WORKERS_DIR / "replication.secret"
REDIS_SECRET = WORKERS_DIR / "redis.secret"
NGINX_INCLUDE = SYNAPSE_ETC / "nginx-workers.conf"
# What ucf may leave beside a file it manages (the old, the new and the shipped version).
UCF_BACKUP_SUFFIXES = (".ucf-old", ".ucf-new", ".ucf-dist")

# What this package keeps between runs (purged with the package).
STATE_DIR = Path("/var/lib/matrix-synapse-setup")
# The dumps of Synapse's database, and the copy of a ported SQLite file.
BACKUP_DIR = Path("/var/backups/matrix-synapse-setup")
# How many dumps the apt hook keeps when debconf's backup-keep says nothing else.
DEFAULT_BACKUP_KEEP = 3
