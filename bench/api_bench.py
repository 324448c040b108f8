"""Benchmark: what a call to the HTTP service costs, over a real ``govbus serve`` on a real
PostgreSQL (a scratch database, dropped afterwards), no broker needed.

For each of ten fresh agencies: the first call with its token, which pays the token's scrypt
check, then fifty ``GET /v1/grants`` with the same token, which pay one indexed read of the
credential (so a revocation still counts at once) and the listing. Medians and p95 of wall
time per call, as a client on the same machine sees them.

``python -m bench.api_bench [--admin-dsn URL]`` runs it alone (about ten seconds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from govbus.core import access, db, registry
from govbus.core.catalogue import load_catalogue

AGENCIES, CALLS = 10, 50


def main() -> None:
    from tests.integration.api.conftest import start_service, stop_service
    from tests.integration.conftest import scratch_database

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with scratch_database(args.admin_dsn) as url, tempfile.TemporaryDirectory() as tmp:
        db.migrate(url)
        registry.sync(url, load_catalogue())
        svc = start_service(url, "127.0.0.1:1", Path(tmp) / "serve.log")
        try:
            firsts, later = [], []
            for _ in range(AGENCIES):
                token = access.issue(url, f"agency_{uuid.uuid4().hex[:8]}", "bench")
                with httpx.Client(base_url=svc.url,
                                  headers={"Authorization": f"Bearer {token}"}) as http:
                    started = time.perf_counter()
                    assert http.get("/v1/grants").status_code == 200
                    firsts.append(time.perf_counter() - started)
                    for _ in range(CALLS):
                        started = time.perf_counter()
                        http.get("/v1/grants")
                        later.append(time.perf_counter() - started)
        finally:
            stop_service(svc)
    later.sort()
    print(f"first call with a token (scrypt): median {statistics.median(firsts) * 1e3:.1f} ms")
    print(f"later calls: median {statistics.median(later) * 1e3:.2f} ms, p95 "
          f"{later[int(len(later) * 0.95)] * 1e3:.2f} ms over {len(later)}")


if __name__ == "__main__":
    main()
