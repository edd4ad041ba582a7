"""Try to log in to PostgreSQL as Synapse would (runs inside a system-test root, with the
root's python3-psycopg).  Reads {"host", "port", "dbname", "user", "password"} as JSON on
standard input (never a command line), prints "ok <server version>" or "refused: <why>".
"""

import json
import sys

import psycopg

params = json.load(sys.stdin)
try:
    with psycopg.connect(connect_timeout=10, **params) as conn:
        print(f"ok {conn.info.server_version}")
except psycopg.Error as err:
    print(f"refused: {str(err).strip()}")
    sys.exit(1)
