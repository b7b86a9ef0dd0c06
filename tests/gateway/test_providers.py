"""Execution-provider choice: the rules (with the device count and library check given), and the real
loader check of the CUDA provider's library on files that cannot load."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.inference import providers
from gateway.inference.providers import CPU, CUDA, ProviderUnavailable, choose
from gateway.repository import ConfigError, ModelConfig, parse_config

WITH_CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")
MISSING = "libcublasLt.so.13: cannot open shared object file: No such file or directory"


def test_cpu_preference_never_asks_for_a_device() -> None:
    def never() -> str | None:
        raise AssertionError("the library check ran for a CPU model")

    choice = choose("cpu", WITH_CUDA, devices=4, library_problem=never)
    assert choice.providers == (CPU,) and choice.reason == "CPU requested in the model config"


def test_auto_takes_cuda_when_the_device_and_library_are_there() -> None:
    choice = choose("auto", WITH_CUDA, devices=2, library_problem=lambda: None)
    assert choice.providers == (CUDA, CPU) and choice.wants_cuda
    assert choice.reason == "CUDA device 0 (2 found)"
    assert choose("auto", WITH_CUDA, devices=2, library_problem=lambda: None, device_id=1).reason == \
        "CUDA device 1 (2 found)"


@pytest.mark.parametrize(("available", "devices", "problem", "why"), [
    (("CPUExecutionProvider",), 1, None, "the installed onnxruntime has no CUDA execution provider"),
    (WITH_CUDA, 0, None, "no CUDA device found"),
    (WITH_CUDA, 1, MISSING, f"the CUDA execution provider cannot load ({MISSING})"),
])
def test_auto_falls_back_to_cpu_and_says_why(available: tuple[str, ...], devices: int, problem: str | None,
                                             why: str) -> None:
    choice = choose("auto", available, devices=devices, library_problem=lambda: problem)
    assert choice.providers == (CPU,) and not choice.wants_cuda
    assert choice.reason == f"CPU: {why}"


def test_a_device_id_beyond_the_devices_falls_back_or_fails_by_name() -> None:
    def never() -> str | None:
        raise AssertionError("the library check ran for a device that does not exist")

    fallback = choose("auto", WITH_CUDA, devices=1, library_problem=never, device_id=1)
    assert fallback.providers == (CPU,) and fallback.reason == "CPU: device_id 1 does not exist (1 CUDA device found)"
    with pytest.raises(ProviderUnavailable, match=r"device_id 3 does not exist \(2 CUDA devices found\)"):
        choose("cuda", WITH_CUDA, devices=2, library_problem=never, device_id=3)


def test_model_config_takes_device_id_and_tf32_and_names_bad_values() -> None:
    config = parse_config({"provider": "cuda", "device_id": 2, "tf32": False}, ModelConfig(), source="m/config.yaml")
    assert (config.provider, config.device_id, config.tf32) == ("cuda", 2, False)
    assert (ModelConfig().device_id, ModelConfig().tf32) == (0, True)
    with pytest.raises(ConfigError, match=r"m/config.yaml: device_id: expected an integer in \[0, 1023\], got -1"):
        parse_config({"device_id": -1}, ModelConfig(), source="m/config.yaml")
    with pytest.raises(ConfigError, match=r"m/config.yaml: tf32 must be true or false, got 'no'"):
        parse_config({"tf32": "no"}, ModelConfig(), source="m/config.yaml")


def test_required_cuda_fails_with_the_library_reason() -> None:
    with pytest.raises(ProviderUnavailable, match=r"provider 'cuda' is required .* cannot load \(libcublasLt"):
        choose("cuda", WITH_CUDA, devices=1, library_problem=lambda: MISSING)


def test_library_check_runs_only_on_a_machine_with_a_device() -> None:
    asked: list[int] = []

    def check() -> str | None:
        asked.append(1)
        return None

    choose("auto", WITH_CUDA, devices=0, library_problem=check)
    choose("auto", ("CPUExecutionProvider",), devices=1, library_problem=check)
    assert asked == []


def test_provider_library_absent(tmp_path: Path) -> None:
    assert providers.provider_library_problem(tmp_path) == (
        f"{providers.CUDA_PROVIDER_LIBRARY} is not in {tmp_path}")


def test_provider_library_that_cannot_load_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / providers.CUDA_PROVIDER_LIBRARY
    broken.write_bytes(b"not a shared object")
    problem = providers.provider_library_problem(tmp_path)
    assert problem is not None and str(broken) in problem
