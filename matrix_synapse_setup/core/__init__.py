"""Shared vocabulary: the package's names and places, errors, user-facing messages and
where they go, the answers and their validators, step reports, YAML, fault points for
tests.  Imports nothing else of ours.
"""
