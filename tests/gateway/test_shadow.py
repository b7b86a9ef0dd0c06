"""Shadow comparison of a mirrored answer with the primary's."""

from __future__ import annotations

import numpy as np

from gateway.shadow import compare


def test_labels_agree_when_equal() -> None:
    rows, agreed, _, delta_rows = compare({"label": np.array([1, 0, 1, 1])}, {"label": np.array([1, 1, 1, 0])})
    assert (rows, agreed, delta_rows) == (4, 2, 0)


def test_probabilities_agree_on_argmax_and_give_a_score_delta() -> None:
    a = np.array([[0.9, 0.1], [0.4, 0.6]], np.float32)
    b = np.array([[0.8, 0.2], [0.7, 0.3]], np.float32)
    rows, agreed, delta, delta_rows = compare({"p": a}, {"p": b})
    assert (rows, agreed, delta_rows) == (2, 1, 2)
    assert abs(delta / delta_rows - np.abs(a - b).mean()) < 1e-6


def test_mismatched_outputs_are_not_compared() -> None:
    assert compare({"p": np.zeros((2, 3))}, {"p": np.zeros((2, 4))}) == (0, 0, 0.0, 0)
    assert compare({"p": np.zeros((2, 3))}, {"q": np.zeros((2, 3))}) == (0, 0, 0.0, 0)


def test_shipped_seconds_of_several_replicas_sum_to_the_whole() -> None:
    from gateway.models import ModelManager
    from gateway.observability.metrics import Metrics
    from gateway.shadow import ShadowMirror, SharedShadow
    from rollout.store.base import SliceRecord

    def mirror() -> ShadowMirror:
        return ShadowMirror(ModelManager(Metrics()), Metrics(), clock=lambda: 1000.2)

    whole, a, b = mirror(), mirror(), mirror()
    for replica, (rows, agreed, delta, errors) in ((a, (10, 9, 0.5, 0)), (b, (30, 21, 1.5, 2))):
        replica.record("m", "2", rows, agreed, delta, rows, errors)
        whole.record("m", "2", rows, agreed, delta, rows, errors)
    records = [SliceRecord("m", "2", 1000, "shadow", name, data)
               for name, data in (("a", a.second("m", "2", 1000)), ("b", b.second("m", "2", 1000))) if data]
    shared = SharedShadow(lambda name, m, v, s, e: records).figures("m", "2", 1000, 1001)
    assert shared == whole.figures("m", "2", 1000, 1001)
    assert (shared.requests, shared.errors, shared.agreement_rate) == (40, 2, 30 / 40)
    assert a.second("m", "2", 999) is None
