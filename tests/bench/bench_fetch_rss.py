"""Peak memory of fetching a 1 GiB artifact over loopback (spec/fetch.md §Memory).

Not run by pytest. Usage: ``python tests/bench/bench_fetch_rss.py [--size-mib 1024]``

The artifact is a sparse file with a pseudo-random MiB every 64 MiB: cheap on
disk, yet not all zeros. A ThreadingHTTPServer in this process serves it with
SimpleHTTPRequestHandler (which streams from disk), and each fetch runs in a
child process so resource.getrusage(RUSAGE_CHILDREN).ru_maxrss is that child's
peak alone (wait4 gives each child's own figure; RUSAGE_CHILDREN the largest of
them). A child that only imports hutch.fetch and requests is the baseline.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hutch.store.digest import hash_file

MIB = 1 << 20

BASELINE = "import hutch.fetch, hutch.fetch.download, hutch.fetch.http"
FETCH = """
import sys
from pathlib import Path
from hutch.fetch import FetchOptions, fetch
from hutch.store.digest import Pin
got = fetch([sys.argv[1]], Path(sys.argv[2]), pin=Pin("blake3", sys.argv[3]),
            options=FetchOptions(progress=False))
assert got.digests["blake3"] == sys.argv[3]
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def make_artifact(path: Path, size: int) -> None:
    rng = random.Random(1)
    with path.open("wb") as f:
        f.truncate(size)
        for offset in range(0, size, 64 * MIB):
            f.seek(offset)
            f.write(rng.randbytes(min(MIB, size - offset)))


def child_peak(args: list[str]) -> tuple[int, float]:
    """Run a child python; return its own peak RSS (KiB, from wait4) and its seconds."""
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, *args])
    _, status, usage = os.wait4(child.pid, 0)
    took = time.monotonic() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"child failed with {child.returncode}: {args[:2]}")
    return usage.ru_maxrss, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    size = parser.parse_args().size_mib * MIB

    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        served = root / "www"
        served.mkdir()
        artifact = served / "artifact.bin"
        make_artifact(artifact, size)
        digest, _ = hash_file(artifact)

        handler = functools.partial(_Quiet, directory=str(served))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/artifact.bin"
        try:
            base_kib, base_took = child_peak(["-c", BASELINE])
            rows = [("baseline: import hutch.fetch + requests", base_kib, base_took)]
            for label, source in (("fetch http://", url), ("fetch file://", artifact.as_uri())):
                dest = root / "out.bin"
                peak_kib, took = child_peak(["-c", FETCH, source, str(dest), digest])
                dest.unlink()
                rows.append((f"{label} {size // MIB} MiB", peak_kib, took))
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join()

    print(f"{'case':<44} {'peak RSS':>10} {'time':>8} {'rate':>12}")
    for label, kib, took in rows:
        rate = f"{size / MIB / took:8.0f} MiB/s" if label.startswith("fetch") else ""
        print(f"{label:<44} {kib / 1024:7.1f} MiB {took:7.2f}s {rate:>12}")
    # The figure the issue asks for: the largest peak of any child, as the kernel keeps it.
    overall = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"getrusage(RUSAGE_CHILDREN).ru_maxrss = {overall / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
