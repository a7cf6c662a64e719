"""listener.gc_tuning: what `sbworker run` does to the collector, and that it is undone (tests serve in-process)."""

from __future__ import annotations

import gc
import weakref

from listener import gc_tuning


def test_tune_freezes_the_heap_raises_the_young_threshold_and_restore_undoes_both() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    restore = gc_tuning.tune()
    try:
        assert gc.get_freeze_count() > frozen_before  # what start-up built is out of later collections
        assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, *before[1:])
        assert gc.isenabled()  # cycles are still collected, in larger batches
    finally:
        restore()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_cycle_made_after_tuning_is_still_collected() -> None:
    restore = gc_tuning.tune()
    try:
        class Node:
            other: object = None

        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        restore()
