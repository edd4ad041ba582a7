"""The maintainer scripts' use cases: inspect, plan, execute; version upgrades; the admin
account.
"""
