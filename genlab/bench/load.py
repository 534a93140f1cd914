"""A bounded burst of concurrent requests against a live `genlab serve` on loopback: the status codes
(only 200 and 429 are acceptable), the latencies, and the server's resident memory before, during and
after, read from /proc (Linux)."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise GenlabError(f"no VmRSS for process {pid}")


def start_server(runs: list[str], port: int, extra: list[str] | None = None, timeout: float = 120.0):
    """`genlab serve RUNS` in a child process, returned once /api/health answers."""
    import httpx

    cmd = [sys.executable, "-m", "genlab", "serve", *runs, "--port", str(port), *(extra or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GenlabError(f"the server exited: {proc.stdout.read().strip() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise GenlabError(f"the server did not answer within {timeout:.0f} s")


async def _burst(url: str, bodies: list[dict[str, Any]], concurrency: int, pid: int) -> dict[str, Any]:
    import httpx

    statuses: Counter = Counter()
    latencies: list[float] = []
    peak = [rss_mb(pid)]
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        async with gate:
            start = time.perf_counter()
            try:
                r = await client.post(url, json=body)
                statuses[r.status_code] += 1
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
            latencies.append(time.perf_counter() - start)

    async def watch() -> None:
        while True:
            peak.append(rss_mb(pid))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(one(client, b) for b in bodies))
    watcher.cancel()
    return {"statuses": dict(statuses), "latencies": latencies, "peak_rss_mb": max(peak)}


def load_test(
    runs: list[str], body: dict[str, Any], requests: int = 100, concurrency: int = 32, rounds: int = 2,
    server_args: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``rounds`` bursts of ``requests`` POST /api/generate (``concurrency`` at a time) against a fresh
    server; memory after each round shows whether it keeps growing."""
    port = free_port()
    proc = start_server(runs, port, server_args)
    try:
        before = rss_mb(proc.pid)
        results = []
        for _ in range(rounds):
            out = asyncio.run(
                _burst(f"http://127.0.0.1:{port}/api/generate", [body] * requests, concurrency, proc.pid)
            )
            out["rss_after_mb"] = rss_mb(proc.pid)
            results.append(out)
        import httpx

        alive = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rounds_out = []
    for r in results:
        lat = sorted(r["latencies"])
        rounds_out.append(
            {
                "statuses": r["statuses"],
                "p50_s": statistics.median(lat),
                "p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
                "peak_rss_mb": round(r["peak_rss_mb"], 1),
                "rss_after_mb": round(r["rss_after_mb"], 1),
            }
        )
    unexpected = {k: v for r in results for k, v in r["statuses"].items() if k not in (200, 429)}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "body": body,
        "rss_before_mb": round(before, 1),
        "rounds": rounds_out,
        "unexpected": unexpected,
        "alive_after": alive,
        "cpus": os.cpu_count(),
    }
