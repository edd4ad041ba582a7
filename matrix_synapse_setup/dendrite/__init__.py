"""Dendrite on the same PostgreSQL: its role and database provisioned as Synapse's are, and
its one YAML file pointed at them (the admin command ``matrix-synapse-setup dendrite``)."""
