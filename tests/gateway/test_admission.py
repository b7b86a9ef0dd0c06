"""Admission against the signature: each mistake is refused alone with the field and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.admission import admit, check_outputs
from gateway.errors import InvalidInput
from gateway.types import InferInput, InferRequest, RequestedOutput, Signature, TensorSpec

SIG = Signature((TensorSpec("features", "FP32", (-1, 4)), TensorSpec("category", "INT64", (-1, 1))),
                (TensorSpec("score", "FP32", (-1, 1)),), batchable=True)


def request(*inputs: InferInput) -> InferRequest:
    return InferRequest("mixed", "", list(inputs))


def feat(rows: int = 2, width: int = 4, dtype: str = "FP32") -> InferInput:
    np_type = np.float32 if dtype == "FP32" else np.float64
    return InferInput("features", dtype, (rows, width), np.zeros((rows, width), np_type))


def cat(rows: int = 2) -> InferInput:
    return InferInput("category", "INT64", (rows, 1), np.zeros((rows, 1), np.int64))


def test_a_valid_request_gives_feeds_and_rows() -> None:
    feeds, rows = admit(SIG, 8, request(feat(), cat()))
    assert rows == 2
    assert set(feeds) == {"features", "category"}


@pytest.mark.parametrize(("inputs", "message"), [
    ((feat(),), r"missing input\(s\) \['category'\]"),
    ((feat(), cat(), InferInput("extra", "FP32", (2,), np.zeros(2, np.float32))), r"unknown input\(s\) \['extra'\]"),
    ((feat(dtype="FP64"), cat()), "input 'features': datatype FP64 does not match the model's FP32"),
    ((feat(width=5), cat()), r"input 'features': shape \[2, 5\] does not match \[-1, 4\] at dimension 1"),
    ((feat(rows=3), cat(rows=2)), "batch dimension 2 differs from the other inputs' 3"),
    ((feat(rows=9), cat(rows=9)), "batch of 9 rows exceeds max_batch_size 8"),
    ((feat(), cat(), cat()), "appears more than once"),
])
def test_each_mistake_names_the_field(inputs: tuple[InferInput, ...], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        admit(SIG, 8, request(*inputs))


def test_rank_mismatch_shows_the_expected_shape() -> None:
    flat = InferInput("features", "FP32", (8,), np.zeros(8, np.float32))
    with pytest.raises(InvalidInput, match=r"has 1 dimensions; expected 2 like \[-1, 4\]"):
        admit(SIG, 8, request(flat, cat()))


def test_non_batchable_model_needs_its_exact_shape() -> None:
    fixed = Signature((TensorSpec("image", "FP32", (1, 3)),), (TensorSpec("y", "FP32", (1,)),), batchable=False)
    ok = InferInput("image", "FP32", (1, 3), np.zeros((1, 3), np.float32))
    assert admit(fixed, 0, InferRequest("m", "", [ok]))[1] == 1
    two = InferInput("image", "FP32", (2, 3), np.zeros((2, 3), np.float32))
    with pytest.raises(InvalidInput, match=r"at dimension 0 .expected 1."):
        admit(fixed, 0, InferRequest("m", "", [two]))


def test_unknown_requested_output_is_refused() -> None:
    check_outputs(SIG, [RequestedOutput("score")], "mixed")
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) \['scores'\]; model 'mixed' has \['score'\]"):
        check_outputs(SIG, [RequestedOutput("scores")], "mixed")


CASES = [
    (feat(), cat()),
    (cat(), feat()),  # another order: the compiled fast path hands it to admit
    (feat(),),
    (feat(), cat(), InferInput("extra", "FP32", (2,), np.zeros(2, np.float32))),
    (feat(dtype="FP64"), cat()),
    (feat(width=5), cat()),
    (feat(rows=3), cat(rows=2)),
    (feat(rows=9), cat(rows=9)),
    (InferInput("features", "FP32", (8,), np.zeros(8, np.float32)), cat()),
]


@pytest.mark.parametrize("inputs", CASES)
def test_the_compiled_admitter_agrees_with_admit(inputs: tuple[InferInput, ...]) -> None:
    from gateway.admission import Admitter

    compiled = Admitter(SIG, 8)
    try:
        expected = admit(SIG, 8, request(*inputs))
    except InvalidInput as exc:
        with pytest.raises(InvalidInput) as got:
            compiled(request(*inputs))
        assert str(got.value) == str(exc)
        return
    feeds, rows = compiled(request(*inputs))
    assert rows == expected[1] and set(feeds) == set(expected[0])
    assert all(feeds[n] is expected[0][n] for n in feeds)
