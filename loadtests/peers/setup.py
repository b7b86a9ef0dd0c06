"""Builds the peer servers' virtual environments (`.venv-mlserver`, `.venv-kserve`) at the repo root.

Each venv is rebuilt only when its stamp (Python version + pins + lock file) changed. Run it with
`python -m loadtests.peers` or `python loadtests/peers/setup.py`; `--force` rebuilds.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEERS_DIR.parent.parent
STAMP_NAME = ".peer-stamp"
INSTALL_TIMEOUT_S = 900.0
CHECK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class VenvSpec:
    """One peer environment: the folder, the top-level pins, the full lock, a module that must import."""

    name: str
    pins: tuple[str, ...]
    imports: tuple[str, ...]

    @property
    def path(self) -> Path:
        return REPO_ROOT / f".venv-{self.name}"

    @property
    def lock(self) -> Path:
        return PEERS_DIR / f"{self.name}-lock.txt"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


VENVS: dict[str, VenvSpec] = {
    # uvloop 0.22 made get_event_loop() raise when no loop is set; MLServer 1.7.1's parallel
    # inference workers call it before starting their loop and die at start-up, so keep 0.21.
    "mlserver": VenvSpec("mlserver", ("mlserver==1.7.1", "onnxruntime==1.32.0", "numpy==2.4.6", "uvloop==0.21.0"),
                         ("mlserver", "onnxruntime", "numpy")),
    "kserve": VenvSpec("kserve", ("kserve==0.21.0", "onnxruntime==1.32.0", "numpy==2.4.6"),
                       ("kserve", "onnxruntime", "numpy")),
}


class SetupError(Exception):
    """A venv could not be built or does not import its packages; the message says why in one line."""


def interpreter() -> str:
    """Python 3.11 or 3.12 (the peers' releases support no newer), else the one running this file."""
    for name in ("python3.11", "python3.12"):
        found = shutil.which(name)
        if found:
            return found
    return sys.executable


def _version_of(python: str) -> str:
    done = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S, check=False)
    return done.stdout.strip()


def stamp_of(spec: VenvSpec) -> str:
    """What the venv was built from: the interpreter's version, the pins and the lock file's bytes."""
    digest = hashlib.sha256()
    digest.update(_version_of(str(spec.python) if spec.python.exists() else interpreter()).encode())
    digest.update("\n".join(spec.pins).encode())
    digest.update(spec.lock.read_bytes())
    return digest.hexdigest()


def is_current(spec: VenvSpec) -> bool:
    stamp = spec.path / STAMP_NAME
    return spec.python.exists() and stamp.exists() and stamp.read_text().strip() == stamp_of(spec)


def _run(cmd: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{Path(cmd[0]).name} {cmd[1]} timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()
                 and not ln.startswith("WARNING: Location")]
        raise SetupError(lines[-1] if lines else f"exit status {done.returncode}")


def build(spec: VenvSpec) -> float:
    """Creates the venv from scratch and installs the pins under the lock; returns the seconds spent."""
    start = time.monotonic()
    shutil.rmtree(spec.path, ignore_errors=True)
    _run([interpreter(), "-m", "venv", str(spec.path)], CHECK_TIMEOUT_S)
    _run([str(spec.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "-c", str(spec.lock), *spec.pins], INSTALL_TIMEOUT_S)
    check(spec)
    (spec.path / STAMP_NAME).write_text(stamp_of(spec) + "\n")
    return time.monotonic() - start


def check(spec: VenvSpec) -> None:
    """Raises SetupError unless the venv's Python imports every package the peer needs."""
    if not spec.python.exists():
        raise SetupError(f"{spec.path.name} has no bin/python")
    _run([str(spec.python), "-c", "import " + ", ".join(spec.imports)], CHECK_TIMEOUT_S)


def ensure(spec: VenvSpec, *, force: bool = False) -> str:
    """Builds the venv when missing or stale; returns "ready" or "unavailable: <why>"."""
    try:
        if force or not is_current(spec):
            seconds = build(spec)
            print(f"{spec.path.name}: built in {seconds:.1f}s", file=sys.stderr)
        else:
            check(spec)
    except (SetupError, OSError) as exc:
        return f"unavailable: {exc}"
    return "ready"


def ensure_all(*, force: bool = False) -> dict[str, str]:
    """Both venvs side by side: pip waits on I/O enough that this beat one after the other here."""
    with ThreadPoolExecutor(max_workers=len(VENVS)) as pool:
        futures = {name: pool.submit(ensure, spec, force=force) for name, spec in VENVS.items()}
        return {name: future.result() for name, future in futures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp is current")
    args = parser.parse_args(argv)
    start = time.monotonic()
    statuses = ensure_all(force=args.force)
    for name, status in statuses.items():
        print(f"{VENVS[name].path.name}: {status}")
    print(f"total {time.monotonic() - start:.1f}s")
    return 0 if all(s == "ready" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
