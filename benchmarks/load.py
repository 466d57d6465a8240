"""Load on `cobbnet serve`: concurrent predictions over loopback, for 1 and 2 workers.

For each worker count it starts ``python -m cobbnet serve`` on a free port, waits until every
worker has loaded its model, warms each up, then posts ``--requests`` copies of one radiograph,
``--concurrency`` at a time, and stops the service. Every answer is compared with the first
(the same image must give the same result), so a request is counted as served only when it
came back whole and identical; ``lost`` counts the requests that got no answer at all.
Bounded: ``--requests`` in count, ``--timeout`` seconds in time for each run.

    python benchmarks/load.py                                        # the bundled example
    python benchmarks/load.py --runs 1 1x1 2 4x1 --requests 64 --out /tmp/load.json   # 1x1: one worker, one thread
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).with_name("results")
STARTUP_LINE = "Application startup complete."  # uvicorn prints it once per worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _example() -> Path:
    from cobbnet.infer.bundle import example_path

    return example_path()


def start_service(workers: int, port: int, log: Path, startup_s: float,
                  threads: int | None = None) -> subprocess.Popen:
    """``cobbnet serve`` in a child process; returns once every worker has loaded its model."""
    cmd = [sys.executable, "-m", "cobbnet", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), *(["--threads", str(threads)] if threads else [])]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + startup_s
    while log.read_text(errors="replace").count(STARTUP_LINE) < workers:
        if proc.poll() is not None:
            raise RuntimeError(f"cobbnet serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            stop_service(proc)
            raise TimeoutError(f"the {workers} worker(s) did not start within {startup_s:.0f} s")
        time.sleep(0.2)
    return proc


def stop_service(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


async def _post(client: httpx.AsyncClient, url: str, name: str, data: bytes) -> tuple[float, int | None, Any]:
    start = time.perf_counter()
    try:
        response = await client.post(url, files={"file": (name, data, "image/jpeg")})
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        return time.perf_counter() - start, response.status_code, body
    except httpx.HTTPError as err:
        return time.perf_counter() - start, None, repr(err)


async def _load(base: str, name: str, data: bytes, workers: int, requests: int, concurrency: int,
                timeout_s: float) -> dict[str, Any]:
    url = f"{base}/v1/predict"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        warm = await asyncio.gather(*(_post(client, url, name, data) for _ in range(2 * workers)))
        reference = warm[0][2]
        if warm[0][1] != 200:
            raise RuntimeError(f"warm-up prediction failed: {warm[0][1]} {reference}")
        gate = asyncio.Semaphore(concurrency)

        async def one() -> tuple[float, int | None, Any]:
            async with gate:
                return await _post(client, url, name, data)

        start = time.perf_counter()
        tasks = [asyncio.ensure_future(one()) for _ in range(requests)]
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        wall = time.perf_counter() - start
        for task in pending:
            task.cancel()
    answers = [t.result() for t in done]
    served = [lat for lat, status, body in answers if status == 200 and body == reference]
    statuses: dict[str, int] = {}
    for _, status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "workers": workers, "requests": requests, "concurrency": concurrency,
        "served_identical": len(served), "answered": len(answers), "statuses": statuses,
        "lost": requests - len(answers) + sum(1 for _, s, _ in answers if s is None),
        "wall_s": round(wall, 3),
        "throughput_per_s": round(len(served) / wall, 3) if wall > 0 else None,
        "latency_s": {k: None if v is None else round(v, 3) for k, v in (
            ("p50", _percentile(served, 50)), ("p95", _percentile(served, 95)),
            ("mean", sum(served) / len(served) if served else None), ("max", max(served, default=None)))},
        "timed_out": bool(pending),
    }


def run_load(workers: int, requests: int, concurrency: int, image: Path, timeout_s: float = 300,
             startup_s: float = 180, threads: int | None = None) -> dict[str, Any]:
    """One bounded run against a fresh ``cobbnet serve --workers WORKERS [--threads THREADS]``."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="cobbnet-load-") as folder:
        log = Path(folder) / "serve.log"
        proc = start_service(workers, port, log, startup_s, threads)
        try:
            run = asyncio.run(_load(f"http://127.0.0.1:{port}", image.name, image.read_bytes(), workers,
                                    requests, concurrency, timeout_s))
            return {"threads_per_worker": threads or max(1, (os.cpu_count() or 1) // workers), **run}
        except RuntimeError as err:
            raise RuntimeError(f"{err}\nthe service's log ends:\n{log.read_text(errors='replace')[-4000:]}") from None
        finally:
            stop_service(proc)


def _cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()


def markdown(report: dict[str, Any]) -> str:
    """The runs as a table, with what they ran on."""
    lines = [f"# Load on `cobbnet serve` ({report['date']})", "",
             f"{report['image']['name']} ({report['image']['width']}x{report['image']['height']}, "
             f"{report['image']['bytes']} bytes), {report['machine']['cpus']} CPUs ({report['machine']['cpu']}), "
             f"load average {report['machine']['load_average_1min']} at the start. Command: `{report['command']}`", "",
             "| workers | threads each | requests | concurrency | served identical | lost | throughput (/s) | p50 (s) | p95 (s) | max (s) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["runs"]:
        lat = r["latency_s"]
        lines.append(f"| {r['workers']} | {r['threads_per_worker']} | {r['requests']} | {r['concurrency']} | {r['served_identical']} | {r['lost']} "
                     f"| {r['throughput_per_s']} | {lat['p50']} | {lat['p95']} | {lat['max']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="predictions per run (default 32)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    parser.add_argument("--runs", nargs="+", default=["1", "2"], metavar="W[xT]",
                        help="one run per item: W workers, each with T inference threads "
                             "(default T: cobbnet serve's, the CPUs shared among the workers); default 1 2")
    parser.add_argument("--image", type=Path, help="the radiograph to post (default: the bundled example)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each run may take (default 300)")
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json", help="JSON to write (and a .md beside it)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from PIL import Image

    image = args.image or _example()
    with Image.open(image) as im:
        width, height = im.size
    report = {
        "date": dt.date.today().isoformat(),
        "command": " ".join(["python benchmarks/load.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "image": {"name": image.name, "width": width, "height": height, "bytes": image.stat().st_size},
        "runs": [],
    }
    for spec in args.runs:
        workers, _, threads = spec.partition("x")
        run = run_load(int(workers), args.requests, args.concurrency, image, args.timeout,
                       threads=int(threads) if threads else None)
        print(json.dumps(run), flush=True)
        report["runs"].append(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
