"""Container health check: exit 0 when the gateway's HTTP data plane reports ready, 1 otherwise.

It reads the same environment as `servegate serve` (SERVEGATE_HTTP_PORT, SERVEGATE_TLS_CERT) so that
a container started with another port or with TLS is still checked on the right listener.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"
TIMEOUT_SECONDS = 3.0  # below the HEALTHCHECK --timeout, so a hung listener reports as not ready


def ready_url() -> str:
    port = os.environ.get("SERVEGATE_HTTP_PORT", "8000")
    scheme = "https" if os.environ.get("SERVEGATE_TLS_CERT") else "http"
    return f"{scheme}://127.0.0.1:{port}{READY_PATH}"


def main() -> int:
    # The check speaks to its own container over loopback: no proxy, and the certificate names the
    # service rather than 127.0.0.1, so it is not verified here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(ready_url(), timeout=TIMEOUT_SECONDS) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"servegate not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
