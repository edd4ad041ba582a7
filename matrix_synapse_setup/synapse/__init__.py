"""Synapse: its effective configuration, its service, its HTTP client, porting its SQLite data."""
