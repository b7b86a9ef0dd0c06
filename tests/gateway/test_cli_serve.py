"""`servegate serve` settles its heap once it is up: what start-up built leaves the collector's full passes."""

from __future__ import annotations

import gc

from gateway import cli


def test_start_up_objects_are_frozen_out_of_full_collections() -> None:
    kept = [[i] for i in range(1000)]  # long-lived objects, as sessions and profiles are
    before = gc.get_freeze_count()
    try:
        cli._settle_heap()
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()  # this test process goes on: give its objects back to the collector
