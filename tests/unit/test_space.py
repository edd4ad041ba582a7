"""files/space.py: needs on one filesystem add up; a directory not made yet is measured
where it will be made."""

from __future__ import annotations

import os
from pathlib import Path

from matrix_synapse_setup.files import space


def need(what: str, device: int, free: int, amount: int) -> space.Need:
    return space.Need(what, Path("/x") / what, device, free, amount)


def test_needs_add_up_on_one_filesystem():
    apart = [need("work", 1, 300, 200), need("data", 2, 300, 200)]
    assert space.shortages(apart) == []
    together = [need("work", 1, 300, 200), need("data", 1, 300, 200)]
    [(group, free, total)] = space.shortages(together)
    assert (len(group), free, total) == (2, 300, 400)
    [(group, free, total)] = space.shortages([need("work", 1, 100, 200), apart[1]])
    assert ([n.what for n in group], free, total) == (["work"], 100, 200)


def test_exactly_full_fits():
    assert space.shortages([need("work", 1, 200, 200)]) == []


def test_a_directory_not_made_yet_is_measured_at_its_nearest_ancestor(tmp_path):
    later = tmp_path / "not" / "yet"
    assert space.existing(later) == tmp_path
    measured = space.measure("later", later, 10)
    assert measured.path == later and measured.device == os.stat(tmp_path).st_dev
    assert measured.free == space.free_bytes(tmp_path) > 0
