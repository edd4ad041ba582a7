"""PostgreSQL: checks and queries, libpq diagnosis, the privilege-separated child,
provisioning, tuning, dumps and restores.
"""
