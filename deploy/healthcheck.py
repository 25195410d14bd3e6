"""Docker's HEALTHCHECK for ``roost serve``: healthy when the server answers HTTP.

Roost has no health endpoint of its own, so this sends ``GET`` for
``ROOST_HEALTH_PATH`` (default ``/``) to the port ``ROOST_PORT`` names and
counts any HTTP response as healthy, whatever its status: an answer shows that
the server is up and its event loop is running, while a 404 from the front or
a 503 under load does not mean that restarting would help.  No answer within
the timeout, or a refused connection, is unhealthy (exit 1).
"""

from __future__ import annotations

import http.client
import os
import sys


def main() -> int:
    port = int(os.environ.get("ROOST_PORT") or 8787)
    path = os.environ.get("ROOST_HEALTH_PATH") or "/"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"User-Agent": "roost-healthcheck"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        print(f"unhealthy: no answer on 127.0.0.1:{port}{path}: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print(f"healthy: {path} answered {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
