#!/usr/bin/python3
"""Benchmarks for matrix-synapse-setup (run with `invoke bench`, as root).

Measures, against a throwaway PostgreSQL cluster on this machine:
- a fresh local provisioning (role + database created, then verified),
- a second run with the same answers (everything unchanged),
- verification alone (what remote mode does),
- the cold start of the helper: a new python3 importing our package and psycopg.
Prints the median and the range of each; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matrix_synapse_setup.core.settings import Settings  # noqa: E402
from matrix_synapse_setup.postgres.provision import provision, verify  # noqa: E402
from scripts.devtools.pgcluster import throwaway_cluster  # noqa: E402


def timed(func, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        func(i)
        times.append(time.perf_counter() - start)
    return times


def report(name: str, times: list[float]) -> None:
    ms = [t * 1000 for t in times]
    print(
        f"{name:<42} median {statistics.median(ms):8.1f} ms"
        f"   min {min(ms):8.1f}   max {max(ms):8.1f}   (n={len(ms)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs per measurement")
    args = parser.parse_args()
    with throwaway_cluster() as cluster:

        def settings(i: int) -> Settings:
            return Settings(port=cluster.port, dbname=f"bench_{i}", user=f"bench_{i}",
                            password=f"bench password {i}")  # fmt: skip

        def fresh(i: int) -> None:
            provision(settings(i), socket_dir=cluster.socket_dir)

        report("provision, fresh (create role + db)", timed(fresh, args.repeat))
        report("provision, second run (unchanged)", timed(fresh, args.repeat))
        report("verify only (remote mode path)", timed(lambda i: verify(settings(i)), args.repeat))
    cold = [
        sys.executable,
        "-c",
        "from matrix_synapse_setup.postgres.queries import import_psycopg;"
        "import matrix_synapse_setup.postgres.provision; import_psycopg()",
    ]
    report(
        "helper cold start (python3 + imports)",
        timed(lambda i: subprocess.run(cold, cwd=ROOT, check=True), args.repeat),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
