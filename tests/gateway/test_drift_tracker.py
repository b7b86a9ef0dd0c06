"""How many rows of a batch the gateway bins for drift: all for narrow models, a sample for wide ones."""

from __future__ import annotations

import pytest

from gateway.observability.drift_tracker import AUTO_SAMPLE_MIN_ROWS, AUTO_SAMPLE_VALUES, sample_rows


@pytest.mark.parametrize(("configured", "features", "expected"), [
    (0, 33, 0),          # the tabular model: 30 inputs + label + 2 probabilities, every row
    (0, 794, 16),         # the MLP: 784 pixels + 10 probabilities, 20 rows' worth rounded to whole blocks of 8
    (0, 50_000, AUTO_SAMPLE_MIN_ROWS),    # very wide: never fewer than the minimum
    (-1, 794, 0),        # explicitly every row
    (12, 33, 12),        # an explicit number wins
])
def test_sample_rows(configured: int, features: int, expected: int) -> None:
    assert sample_rows(configured, features) == expected


def test_the_auto_sample_bounds_a_batchs_binned_values() -> None:
    for features in (256, 794, 3_000):
        rows = sample_rows(0, features)
        assert rows * features <= max(AUTO_SAMPLE_VALUES, AUTO_SAMPLE_MIN_ROWS * features)


def test_a_models_config_sets_the_drift_cpu_budget_and_bad_values_name_the_field() -> None:
    from gateway.observability.drift_tracker import _drift_config
    from gateway.repository import ConfigError, ModelConfig, parse_config

    assert ModelConfig().drift_cpu_budget == 0.005
    config = parse_config({"drift_cpu_budget": 0.05}, ModelConfig(), source="m/config.yaml")
    assert _drift_config(config, 33).cpu_budget == 0.05
    assert _drift_config(parse_config({"drift_cpu_budget": 0}, ModelConfig()), 33).cpu_budget == 0.0
    for bad in (1.5, -0.1, "lots", True):
        with pytest.raises(ConfigError, match=r"m/config.yaml: drift_cpu_budget must be a share of one core"):
            parse_config({"drift_cpu_budget": bad}, ModelConfig(), source="m/config.yaml")
