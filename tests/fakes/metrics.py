"""A scripted `MetricsSource`: each version serves at a set rate with a set error rate and latency, so
a window's figures follow from its length; `available = False` answers "no data"."""

from __future__ import annotations

from dataclasses import dataclass, field

from rollout.analysis import ArmWindow, Observation


@dataclass(frozen=True)
class ArmProfile:
    requests_per_s: float = 20.0
    error_rate: float = 0.0
    p50_ms: float = 5.0
    p99_ms: float = 20.0
    input_psi_max: float | None = None


@dataclass
class ScriptedMetrics:
    profiles: dict[str, ArmProfile] = field(default_factory=dict)
    prediction_psi: float | None = None
    available: bool = True
    fail_with: Exception | None = None
    calls: list[tuple[str, str, str, float, float]] = field(default_factory=list)

    def set(self, version: str, **figures: float | None) -> None:
        self.profiles[version] = ArmProfile(**figures)  # type: ignore[arg-type]

    def observe(self, model: str, candidate: str, stable: str, window_start: float,
                window_end: float) -> Observation | None:
        self.calls.append((model, candidate, stable, window_start, window_end))
        if self.fail_with is not None:
            raise self.fail_with
        if not self.available:
            return None
        seconds = max(0.0, window_end - window_start)
        return Observation(window_start, window_end, self._arm(candidate, seconds),
                           self._arm(stable, seconds), prediction_psi=self.prediction_psi)

    def _arm(self, version: str, seconds: float) -> ArmWindow:
        p = self.profiles.get(version, ArmProfile())
        requests = int(p.requests_per_s * seconds)
        return ArmWindow(version, requests, round(requests * p.error_rate), p.p50_ms, p.p99_ms,
                         p.input_psi_max)
