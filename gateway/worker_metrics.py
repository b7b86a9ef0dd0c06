"""One `/metrics` for all the workers of `servegate serve --workers N`.

The workers share the admin port, so a scrape reaches whichever one the kernel picks. Each worker
therefore also serves its own metrics on a private listener (127.0.0.1, a free port, written to the
supervisor's run directory as `worker-<index>.port`). The worker a scrape reaches fetches the others'
pages and answers with every worker's samples, each labelled `worker="<index>"`, plus
`servegate_worker_scrape_up{worker}` saying which workers answered. `sum without (worker) (...)`
gives the pod's totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.protocol.http_server import HttpServer, Request, Response, Route, Router

log = logging.getLogger(__name__)

DIR_ENV = "SERVEGATE_WORKER_DIR"  # set by the supervisor: where the workers leave their metrics ports
FETCH_TIMEOUT_S = 2.0
MAX_PAGE_BYTES = 64 * 1024 * 1024
UP = "servegate_worker_scrape_up"


def merge(pages: Mapping[str, str | None]) -> str:
    """Prometheus text pages by worker index -> one page: each family once (HELP and TYPE from the first
    worker that has it), its samples from every worker with a `worker` label. A worker whose page is
    None did not answer: it only shows as 0 in `servegate_worker_scrape_up`."""
    headers: dict[str, dict[str, str]] = {}  # family -> HELP / TYPE -> line
    samples: dict[str, list[str]] = {}
    for worker, page in pages.items():
        if page is None:
            continue
        family = ""
        for line in page.splitlines():
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    headers.setdefault(family, {}).setdefault(parts[1], line)
                    samples.setdefault(family, [])
            elif line:
                samples.setdefault(family, []).append(_labelled(line, worker))
    out: list[str] = []
    for family, lines in samples.items():
        known = headers.get(family, {})
        out += [known[k] for k in ("HELP", "TYPE") if k in known]
        out += lines
    out.append(f"# HELP {UP} Whether this scrape read the worker's metrics (1) or the worker did not answer (0).")
    out.append(f"# TYPE {UP} gauge")
    out += [f'{UP}{{worker="{w}"}} {0.0 if page is None else 1.0}' for w, page in pages.items()]
    return "\n".join(out) + "\n"


def _labelled(sample: str, worker: str) -> str:
    """`name{a="1"} v` -> `name{worker="w",a="1"} v`; `name v` -> `name{worker="w"} v`."""
    label = f'worker="{worker}"'
    brace, space = sample.find("{"), sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = sample[brace + 1:]
        return f"{sample[:brace]}{{{label}{'' if rest.startswith('}') else ','}{rest}"
    if space == -1:
        return sample
    return f"{sample[:space]}{{{label}}}{sample[space:]}"


class WorkerMetrics:
    """A worker's private metrics listener and the merged page served on the shared admin port."""

    def __init__(self, directory: Path, index: int, render: Callable[[], bytes]) -> None:
        self.directory, self.index, self._render = directory, index, render
        self._server: HttpServer | None = None
        self._file = directory / f"worker-{index}.port"

    async def start(self) -> None:
        async def local(req: Request) -> Response:
            return Response(200, self._render(), "text/plain; version=0.0.4; charset=utf-8")

        def error(req: Request | None, exc: BaseException) -> Response:
            return Response(500, str(exc).encode(), "text/plain")

        self._server = HttpServer(Router([Route("GET", "/metrics", local)]), error, host="127.0.0.1", port=0,
                                  max_body_bytes=1024)
        port = await self._server.start()
        scratch = self._file.with_suffix(".tmp")
        scratch.write_text(str(port))
        os.replace(scratch, self._file)  # a reader never sees half a number

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self._server is not None and self._file.read_text().strip() == str(self._server.port):
                self._file.unlink()  # a replacement with the same index may have written its own
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None

    def _ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for path in sorted(self.directory.glob("worker-*.port")):
            with contextlib.suppress(OSError, ValueError):
                ports[path.stem.removeprefix("worker-")] = int(path.read_text().strip())
        return ports

    async def render(self) -> bytes:
        """Every worker's metrics, fetched concurrently; this worker's own without a round trip."""
        ports = self._ports()
        ports.pop(str(self.index), None)
        fetched = await asyncio.gather(*(_fetch(port) for port in ports.values()))
        pages: dict[str, str | None] = {str(self.index): self._render().decode()}
        pages.update(zip(ports, fetched, strict=True))
        ordered = dict(sorted(pages.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))
        return merge(ordered).encode()


async def _fetch(port: int) -> str | None:
    """GET /metrics from a sibling on 127.0.0.1; None when it does not answer in time or fails."""
    writer = None
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if status != b"200" or length is None or length > MAX_PAGE_BYTES:
                log.warning("worker metrics on port %d answered %r", port, head[:64])
                return None
            return (await reader.readexactly(length)).decode()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        log.debug("worker metrics on port %d: %s", port, exc)
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
