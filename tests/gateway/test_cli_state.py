"""`servegate state snapshot` and `servegate state restore --from-file`, run through the CLI entry point:
the state moves between stores, a store holding state is refused, bad input is a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from rollout.snapshot import read_documents
from rollout.store.base import KIND_ROUTE, KIND_VERSION
from rollout.store.sqlite import SqliteStore


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def source(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "source.db")
    store = SqliteStore(url)
    try:
        store.put(KIND_VERSION, "m/1", {"stage": "production"})
        store.put(KIND_ROUTE, "m", {"policy": "canary", "weights": {"1": 100}})
        store.append_audit("alice", "register", "m", "1", None, {"stage": "production"}, "first")
    finally:
        store.close()
    return url


def test_a_snapshot_file_moves_the_state_into_another_store(source: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = tmp_path / "state.json"
    assert main(["state", "snapshot", "--store", source, "--out", str(snapshot)]) == 0
    target = sqlite_url(tmp_path / "target.db")
    assert main(["state", "restore", "--store", target, "--from-file", str(snapshot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["documents"], report["audit_entries"]) == (2, 1)
    a, b = SqliteStore(source), SqliteStore(target)
    try:
        assert read_documents(a) == read_documents(b) and a.audit_all() == b.audit_all()
    finally:
        a.close()
        b.close()
    assert main(["state", "restore", "--store", target, "--from-file", str(snapshot)]) == 1  # holds state now
    assert "already holds state" in capsys.readouterr().err
    assert main(["state", "restore", "--store", target, "--from-file", str(snapshot), "--force"]) == 0


def test_bad_input_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"format": "something else"}')
    target = sqlite_url(tmp_path / "t.db")
    assert main(["state", "restore", "--store", target, "--from-file", str(bogus)]) == 2
    assert main(["state", "restore", "--store", target, "--from-file", str(tmp_path / "missing.json")]) == 2
    monkeypatch.delenv("SERVEGATE_STORE", raising=False)
    assert main(["state", "snapshot"]) == 2
    assert "--store" in capsys.readouterr().err
