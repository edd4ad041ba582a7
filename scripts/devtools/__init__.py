"""Developer tooling shared by tasks.py, the scripts beside this package and the tests.

Throwaway PostgreSQL clusters (pgcluster), cached Debian roots (roots), a root per run in
its own namespaces (harness, nsinit, nsboot, the in-root helpers in inroot/, the Synapse
stand-in package in synapse-standin/), the steps run in such a root (steps) and older
builds of this tree (builds).  The tests import this package; nothing here imports the
tests (tests/unit/test_layers.py checks that).
"""
