"""Reference profiles: quantile and class binning, JSON round trips, live building, clear errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reference
from kernels.profile import Profile, ProfileBuilder, build_profile, quantile_edges


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 20), st.sampled_from([0, 1, 3]))
def test_quantile_bins_hold_about_equal_shares(seed: int, bins: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    column = np.round(rng.normal(size=2000), decimals)
    edges = quantile_edges(column, bins)
    assert len(edges) <= bins - 1 and (np.diff(edges) > 0).all() and np.isfinite(edges).all()
    counts = reference.bin_counts(column[:, None], edges[:, None])[0, 1:-2]
    assert counts.sum() == 2000
    # A bin holds at most its own quantile's share plus a value tied at its lower edge (under two
    # shares), unless it is the bin of a single value that spans several quantiles.
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    for k in np.flatnonzero(counts > 3 * 2000 / bins + 1):
        inside = column[(column >= bounds[k]) & (column < bounds[k + 1])]
        assert np.unique(inside).size == 1


def test_constant_and_point_mass_features_get_their_own_bin() -> None:
    assert quantile_edges(np.full(100, 3.0), 10).tolist() == [3.0, np.nextafter(3.0, np.inf)]
    column = np.concatenate([np.zeros(700), np.linspace(1, 2, 300)])
    edges = quantile_edges(column, 10)
    counts = reference.bin_counts(column[:, None], edges[:, None])[0]
    assert counts[2] == 700  # the mass at 0 alone in [0, next float above 0)
    assert quantile_edges(np.array([np.nan, np.inf]), 10).size == 0


def sample(rng: np.random.Generator, rows: int = 500) -> tuple[dict[str, Any], dict[str, Any]]:
    x = rng.normal(size=(rows, 2, 3)).astype(np.float32)
    x[::7, 0, 1] = np.nan
    x[:, 1, 2] = 5.0
    return {"x": x, "k": rng.integers(0, 9, size=(rows, 1))}, {
        "label": rng.integers(0, 4, size=rows),
        "prob": rng.random((rows, 4)),
    }


def test_profile_flattens_features_and_bins_classes_one_per_label() -> None:
    inputs, outputs = sample(np.random.default_rng(0))
    profile = build_profile(inputs, outputs, bins=8)
    x, k = profile.inputs
    assert (x.features, x.kind, x.feature_names[4]) == (6, "quantile", "x[4]")
    assert x.rows == 500 and k.kind == "quantile"
    np.testing.assert_array_equal(x.counts, reference.bin_counts(inputs["x"].reshape(500, 6), x.edges))
    assert x.counts[1, -1] == len(range(0, 500, 7))  # NaN has its own slot
    label, prob = profile.outputs
    assert (label.kind, label.classes, prob.kind) == ("classes", 4, "quantile")
    assert label.counts[0, 2:6].tolist() == np.bincount(outputs["label"], minlength=4).tolist()
    np.testing.assert_allclose(label.proportions().sum(axis=1), 1.0)


def test_profile_round_trips_through_strict_json() -> None:
    inputs, outputs = sample(np.random.default_rng(1))
    inputs["empty"] = np.full((500, 1), np.nan)
    profile = build_profile(inputs, outputs, feature_names={"k": ["age"]}, classes={"label": 6})
    text = json.dumps(profile.to_dict(), allow_nan=False)
    back = Profile.from_dict(json.loads(text))
    assert back.bins == profile.bins and back.inputs[1].feature_names == ("age",)
    assert back.outputs[0].classes == 6
    for a, b in zip(profile.inputs + profile.outputs, back.inputs + back.outputs, strict=True):
        assert (a.name, a.kind) == (b.name, b.kind)
        np.testing.assert_array_equal(a.edges, b.edges)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.moments, b.moments)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format=7), r"profile\.format: expected 1"),
        (lambda d: d["inputs"][0].update(kind="median"), r"profile\.inputs\[0\]\.kind: expected one of"),
        (lambda d: d["inputs"][0]["edges"][1].reverse(), r"profile\.inputs\[0\]\.edges\[1\]: expected at most"),
        (lambda d: d["inputs"][0]["counts"].pop(), r"profile\.inputs\[0\]\.counts: expected shape"),
        (lambda d: d["outputs"][0].pop("slots"), r"profile\.outputs\[0\]\.slots: missing"),
        (lambda d: d["inputs"][0].update(slots="9"), r"profile\.inputs\[0\]\.slots: expected int, got str"),
        (lambda d: d["inputs"][0]["moments"].pop(), r"profile\.inputs\[0\]\.moments: expected 5 lists"),
        (lambda d: d["outputs"][0].update(classes="4"), r"profile\.outputs\[0\]\.classes: expected an integer"),
        (lambda d: d.update(inputs={}), r"profile\.inputs: expected list, got dict"),
    ],
)
def test_malformed_profiles_name_the_field(mutate: Any, message: str) -> None:
    d = build_profile(*sample(np.random.default_rng(2))).to_dict()
    mutate(d)
    with pytest.raises(ValueError, match=message):
        Profile.from_dict(d)


def test_bad_reference_samples_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="bins: expected an integer >= 2"):
        build_profile({"x": np.zeros((3, 1))}, bins=1)
    with pytest.raises(ValueError, match="tensor 'x': expected a numeric array"):
        build_profile({"x": np.array([["a"]])})
    with pytest.raises(ValueError, match="tensor 'x': expected a numeric array"):
        build_profile({"x": np.float32(1.0)})
    with pytest.raises(ValueError, match=r"feature_names\['x'\]: expected 2 names, got 1"):
        build_profile({"x": np.zeros((3, 2))}, feature_names={"x": ["a"]})


def test_builder_takes_rows_until_full_then_freezes() -> None:
    rng = np.random.default_rng(3)
    inputs, outputs = sample(rng, rows=300)
    builder = ProfileBuilder(700, bins=5)
    taken = [builder.add({n: a[i : i + 100] for n, a in inputs.items()},
                         {n: a[i : i + 100] for n, a in outputs.items()}) for i in range(0, 300, 100)]
    assert taken == [100, 100, 100] and not builder.done
    more_in, more_out = sample(rng, rows=500)
    assert builder.add(more_in, more_out) == 400 and builder.done
    assert builder.add(more_in, more_out) == 0
    profile = builder.build()
    expected = build_profile(
        {n: np.concatenate([inputs[n], more_in[n][:400]]) for n in inputs},
        {n: np.concatenate([outputs[n], more_out[n][:400]]) for n in outputs},
        bins=5,
    )
    for a, b in zip(profile.inputs + profile.outputs, expected.inputs + expected.outputs, strict=True):
        assert a.rows == 700
        np.testing.assert_array_equal(a.counts, b.counts)


def test_builder_rejects_a_tensor_whose_row_length_changes() -> None:
    builder = ProfileBuilder(10)
    builder.add({"x": np.zeros((2, 3))}, {})
    with pytest.raises(ValueError, match="tensor 'x': shape"):
        builder.add({"x": np.zeros((2, 4))}, {})
    assert builder.rows_seen == 2
    with pytest.raises(ValueError, match="rows_needed"):
        ProfileBuilder(0)
