"""Provision PostgreSQL for Matrix Synapse and point Synapse at it.

The package is private to the Debian package matrix-synapse-setup: it is
installed under /usr/share/matrix-synapse-setup and used by the admin command
/usr/sbin/matrix-synapse-setup and by the maintainer scripts.
"""
