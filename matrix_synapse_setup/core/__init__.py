"""Shared vocabulary: errors, user-facing messages, settings and their validators, step
reports, fault points for tests.  Imports nothing else of ours.
"""
