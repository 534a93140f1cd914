"""The web app's REST API through FastAPI's test client: every endpoint, bad inputs refused with a 4xx
and a one-line JSON message, the rate limit and the queue, and the server still answering afterwards."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from genlab.cli import cli
from genlab.errors import GenlabError
from genlab.server.app import create_app
from genlab.server.limits import Busy, Cancelled, JobQueue, RateLimiter, ServerLimits
from genlab.server.registry import Registry

HOSTS = ("testserver",)  # the test client's Host
SHORT = ["--steps", "2", "--eval-every", "0", "--sample-every", "0", "--no-progress"]


def _cli(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def registry(served_runs):
    root = served_runs
    return Registry([root / "diffusion", root / "gan", root / "classifier", root / "t2i"])


@pytest.fixture()
def client(registry):
    app = create_app(registry, ServerLimits(max_images=4, max_steps=20, burst=1000), allowed_hosts=HOSTS)
    return TestClient(app)


def _png(size=(8, 8), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_page_models_health_and_openapi(client):
    page = client.get("/")
    assert (
        page.status_code == 200
        and 'id="generate"' in page.text
        and "http" not in page.text.split("<script>")[0]
    )
    assert "cdn" not in page.text.lower()  # no internet: everything is served by the app
    models = client.get("/api/models").json()
    kinds = {m["name"]: m["kind"] for m in models["models"]}
    assert kinds == {
        "diffusion": "diffusion",
        "gan": "gan",
        "classifier": "classifier",
        "t2i": "text-to-image",
    }
    assert models["limits"]["max_images"] == 4
    assert {"euler-ancestral", "dpmpp-2m-sde", "heun"} <= set(models["samplers"])  # the page's choices
    assert client.get("/api/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/api/models", "/api/generate", "/api/generate/stream", "/api/attack"} <= set(spec["paths"])


@pytest.mark.parametrize(
    "body",
    [
        {"model": "diffusion", "class_name": "3", "num_images": 2, "steps": 2},
        {"model": "t2i", "prompt": "a red circle", "negative_prompt": "blue", "num_images": 2, "steps": 2},
        {"model": "gan", "num_images": 3},
        {"model": "diffusion", "class_name": "3", "num_images": 1, "steps": 2, "sampler": "euler-ancestral"},
        {"model": "diffusion", "class_name": "3", "num_images": 1, "steps": 2, "sampler": "dpmpp-2m-sde"},
    ],
)
def test_generate(client, body):
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["images"]) == body["num_images"]
    assert _decoded(out["images"][0]).size[0] in (8, 32)
    assert out["settings"]["model"] == body["model"]
    again = client.post("/api/generate", json=body).json()
    assert again["images"] == out["images"]  # the seed fixes the images
    assert out.get("read_as", "absent") == (None if body["model"] == "t2i" else "absent")  # known words


def test_generate_says_how_the_prompt_was_read(client):
    r = client.post("/api/generate", json={"model": "t2i", "prompt": "a tiny red circle", "steps": 1})
    assert r.status_code == 200, r.text
    assert r.json()["read_as"] == "a [UNK] red circle"  # the fixture's word tokenizer never saw "tiny"


def test_generate_stream_sends_progress_then_the_result(client):
    body = {"model": "diffusion", "class_name": "1", "num_images": 2, "steps": 3}
    with client.stream("POST", "/api/generate/stream", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [
        (block.split("\n")[0][len("event: ") :], json.loads(block.split("\n")[1][len("data: ") :]))
        for block in text.strip().split("\n\n")
    ]
    progress = [d for e, d in events if e == "progress"]
    assert [d["step"] for d in progress] == [0, 1, 2, 3] and all(len(d["preview"]) == 2 for d in progress)
    assert events[-1][0] == "done" and len(events[-1][1]["images"]) == 2


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model": "nope"}, 404, "no model named 'nope'"),
        ({"model": "classifier"}, 404, "choose one of"),
        ({"model": "diffusion", "num_images": 10**12}, 422, "num_images must be between 1 and 4"),
        ({"model": "diffusion", "num_images": 1e308}, 422, "num_images"),
        ({"model": "diffusion", "steps": "many"}, 422, "steps"),
        ({"model": "diffusion", "steps": 21}, 422, "steps must be between 1 and 20"),
        ({"model": "diffusion", "seed": -1}, 422, "seed"),
        ({"model": "diffusion", "guidance": 1e9}, 422, "guidance"),
        ({"model": "diffusion", "sampler": "magic"}, 422, "unknown sampler"),
        ({"model": "diffusion", "class_name": "cat"}, 422, "unknown class 'cat'"),
        ({"model": "diffusion", "class_name": "99"}, 422, "out of range"),
        ({"model": "diffusion", "prompt": "a cat"}, 422, "takes no prompt"),
        ({"model": "t2i"}, 422, "give a prompt"),
        ({"model": "t2i", "prompt": "x" * 500}, 422, "limited to 200 characters"),
        ({"model": "diffusion", "path": "/etc/passwd"}, 422, "path"),
        ({"steps": 2}, 422, "model"),
    ],
)
def test_bad_generate_requests_get_a_clear_4xx(client, body, status, message):
    r = client.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error
    assert client.get("/api/health").status_code == 200


def test_attack_on_a_held_out_image_and_an_upload(client):
    r = client.post(
        "/api/attack", data={"model": "classifier", "attack": "pgd", "eps": "0.3", "steps": "5", "index": "3"}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["true_label"] == out["attacked_label"] and out["linf"] <= 0.3 + 1e-6
    assert len(out["before"]) == 3 and len(out["after"]) == 3
    assert _decoded(out["adversarial"]).size == (8, 8) and out["magnification"] > 0
    zero = client.post("/api/attack", data={"model": "classifier", "eps": "0", "index": "3"}).json()
    assert zero["linf"] == 0 and zero["adversarial"] == zero["original"]  # eps 0 is the identity
    files = {"image": ("digit.png", _png((20, 12)), "image/png")}
    r = client.post("/api/attack", data={"model": "classifier", "eps": "0.1"}, files=files)
    assert r.status_code == 200 and r.json()["true_label"] is None
    png = client.get("/api/models/classifier/images/3")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    for name in ("apgd-ce", "apgd-t", "square", "mi-fgsm"):
        form = {"model": "classifier", "attack": name, "eps": "0.3", "steps": "5", "index": "3"}
        r = client.post("/api/attack", data=form)
        assert r.status_code == 200 and r.json()["linf"] <= 0.3 + 1e-6, (name, r.text)
    for name in ("deepfool", "cw"):  # least L2: no epsilon bounds the change
        form = {"model": "classifier", "attack": name, "eps": "0.01", "steps": "5", "index": "3"}
        r = client.post("/api/attack", data=form)
        assert r.status_code == 200 and r.json()["l2"] >= 0, (name, r.text)


@pytest.mark.parametrize(
    "data, files, status, message",
    [
        ({"model": "diffusion", "index": "0"}, None, 404, "choose one of: classifier"),
        ({"model": "classifier", "index": "0", "attack": "jsma"}, None, 422, "unknown attack"),
        ({"model": "classifier", "index": "0", "eps": "5"}, None, 422, "eps must be between 0 and 0.5"),
        ({"model": "classifier", "index": "0", "eps": "nan"}, None, 422, "eps"),
        ({"model": "classifier", "index": "0", "steps": "1000"}, None, 422, "steps"),
        ({"model": "classifier", "index": "99999"}, None, 422, "index must be between"),
        ({"model": "classifier"}, None, 422, "either index"),
        (
            {"model": "classifier"},
            {"image": ("x.png", b"not an image", "image/png")},
            422,
            "not a readable image",
        ),
        ({"model": "classifier"}, {"image": ("x.txt", b"hello", "text/plain")}, 415, "uploads must be"),
        ({"model": "classifier"}, {"image": ("x.png", b"0" * 2_000_000, "image/png")}, 413, "larger than"),
        ({"model": "classifier"}, {"image": ("x.png", _png((4000, 4000)), "image/png")}, 422, "at most 512"),
    ],
)
def test_bad_attack_requests_get_a_clear_4xx(client, data, files, status, message):
    r = client.post("/api/attack", data=data, files=files)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/api/health").status_code == 200


def test_metrics_of_a_run(client):
    out = client.get("/api/models/diffusion/metrics").json()
    assert out["train"] and all("step" in row and "loss" in row for row in out["train"])
    assert client.get("/api/models/nope/metrics").status_code == 404


def test_rate_limit_per_client(registry):
    now = [0.0]
    app = create_app(
        registry, ServerLimits(rate_per_minute=60, burst=2), clock=lambda: now[0], allowed_hosts=HOSTS
    )
    client = TestClient(app)
    body = {"model": "gan", "num_images": 1}
    assert [client.post("/api/generate", json=body).status_code for _ in range(3)] == [200, 200, 429]
    r = client.post("/api/generate", json=body)
    assert (
        r.status_code == 429 and r.headers["retry-after"] == "1" and "too many requests" in r.json()["error"]
    )
    now[0] += 1.0  # one token back after a second at 60 a minute
    assert client.post("/api/generate", json=body).status_code == 200
    assert client.get("/api/models").status_code == 200  # cheap endpoints are not limited


def test_token_bucket_and_queue_units():
    now = [0.0]
    bucket = RateLimiter(rate_per_minute=30, burst=2, clock=lambda: now[0])
    assert [bucket.take("a"), bucket.take("a")] == [0.0, 0.0]
    assert bucket.take("a") == pytest.approx(2.0) and bucket.take("b") == 0.0  # per client
    now[0] = 2.0
    assert bucket.take("a") == 0.0

    import asyncio
    import threading

    gate = threading.Event()

    async def burst():
        queue = JobQueue(running=1, waiting=1)
        jobs = [asyncio.create_task(queue.run(gate.wait, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Exception) as refused:
            await queue.run(gate.wait, 5)
        gate.set()
        await asyncio.gather(*jobs)
        return type(refused.value).__name__, queue.admitted

    assert asyncio.run(burst()) == ("Busy", 0)


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("max_images", 0, "must be at least 1"),
        ("burst", 0, "must be at least 1"),
        ("max_waiting", -1, "must be >= 0"),
    ],
)
def test_limits_name_their_field_and_serve_its_option(field, value, said):
    """ServerLimits speaks of its fields; `genlab serve` of the options that set them."""
    with pytest.raises(GenlabError, match=f"^`{field}` {said}"):
        ServerLimits(**{field: value})
    option = "--" + field.replace("_", "-")
    r = CliRunner().invoke(cli, ["serve", "x", option, str(value)])
    assert r.exit_code == 2 and f"error: {option} {said}" in r.output and "`" not in r.output


def test_registry_refuses_other_kinds(tmp_path):
    _cli(
        "train",
        "vae",
        "--data",
        "digits",
        "--downsample",
        "2",
        "--base-channels",
        "8",
        "--out",
        str(tmp_path / "vae"),
        *SHORT,
    )
    with pytest.raises(GenlabError, match="the server shows"):
        Registry([tmp_path / "vae"])
    with pytest.raises(GenlabError):
        Registry([tmp_path / "missing"])


def test_serve_command_errors():
    r = CliRunner().invoke(cli, ["serve", "/nonexistent/run"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["serve", "x", "--port", "0"])
    assert r.exit_code == 2 and "--port" in r.output


def test_torch_threads_unchanged():
    assert torch.get_num_threads() >= 1


def test_a_burst_against_a_live_server_gets_only_200_and_429(served_runs):
    from genlab.bench.load import load_test

    out = load_test(
        [str(served_runs / "gan")], {"model": "gan", "num_images": 2}, requests=30, concurrency=10, rounds=2,
        server_args=["--burst", "5"],
    )  # fmt: skip
    assert out["unexpected"] == {} and out["alive_after"]
    first = out["rounds"][0]["statuses"]
    assert first.get(200, 0) >= 1 and first.get(429, 0) >= 1 and sum(first.values()) == 30
    assert out["rounds"][1]["rss_after_mb"] < out["rss_before_mb"] + 300  # bounded, not growing per request


# ------------------------------------------------------------------------------------------ issue 19


@contextlib.contextmanager
def _live(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port with `genlab serve`'s settings, in a thread."""
    import uvicorn

    from genlab.bench.load import free_port
    from genlab.server.app import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _jobs_drop_to_zero(url: str, seconds: float) -> float:
    """Seconds until /api/health reports no job running or waiting (fails after ``seconds``)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if httpx.get(f"{url}/api/health").json()["jobs"] == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"jobs still held {seconds} s after their clients left")


def test_every_failure_is_json_and_ends_the_stream(registry, monkeypatch):
    """An unexpected exception (out of memory, a bug) answers a one-line JSON 500 without its message or
    traceback, and the stream ends with an error event."""
    import genlab.server.routes.generate as generation

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory while reading /home/secret/run/model.safetensors")

    monkeypatch.setattr(generation, "_generate", fail)
    client = TestClient(create_app(registry, allowed_hosts=HOSTS), raise_server_exceptions=False)
    body = {"model": "gan", "num_images": 1}
    r = client.post("/api/generate", json=body)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert "RuntimeError" in error and "/home/secret" not in error and "\n" not in error
    with client.stream("POST", "/api/generate/stream", json=body) as r:
        text = "".join(r.iter_text())
    assert text.startswith("event: error\n") and text.endswith("\n\n")
    assert "/home/secret" not in text and "RuntimeError" in json.loads(text.split("data: ")[1])["error"]
    assert client.get("/api/health").json()["jobs"] == 0


def test_abandoned_requests_are_cancelled_and_a_client_holds_few_jobs(registry):
    """A client that leaves mid-request frees its place at once (the job stops at its next step), and one
    client holds at most max_jobs_per_client jobs."""
    limits = ServerLimits(max_steps=100_000, burst=100, max_jobs_per_client=2)
    app = create_app(registry, limits, allowed_hosts=("127.0.0.1",))
    long = {"model": "diffusion", "num_images": 1, "steps": 100_000, "sampler": "euler"}
    with (
        _live(app) as url,
        httpx.Client(base_url=url, timeout=30) as first,
        httpx.Client(base_url=url) as second,
    ):
        with first.stream("POST", "/api/generate/stream", json=long) as running:
            lines = running.iter_lines()  # kept: a discarded iterator closes the connection
            assert next(lines).startswith("event: progress")
            with second.stream("POST", "/api/generate/stream", json=long) as waiting:
                assert waiting.status_code == 200 and httpx.get(f"{url}/api/health").json()["jobs"] == 2
                third = httpx.post(f"{url}/api/generate", json={"model": "gan", "num_images": 1})
                assert third.status_code == 429 and "at most 2 at once" in third.json()["error"]
        # both streams are closed: the running job and the waiting one let go within a step
        assert _jobs_drop_to_zero(url, 5.0) < 5.0
        with pytest.raises(httpx.ReadTimeout):  # the plain endpoint: a client that gives up
            httpx.post(f"{url}/api/generate", json=long, timeout=1.0)
        assert _jobs_drop_to_zero(url, 5.0) < 5.0
        assert httpx.post(f"{url}/api/generate", json={"model": "gan", "num_images": 1}).status_code == 200


def test_job_queue_per_client_and_cancellation_units():
    import asyncio

    gate = threading.Event()

    async def scenario():
        queue = JobQueue(running=1, waiting=8, per_client=2)
        a1, a2 = queue.admit("a"), queue.admit("a")
        with pytest.raises(Busy, match="at most 2 at once"):
            queue.admit("a")
        b = queue.admit("b")  # another client is not held back
        a2.cancel.set()  # cancelled while waiting: it never runs
        first = asyncio.create_task(a1.run(gate.wait, 5))
        second = asyncio.create_task(a2.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        gate.set()
        assert await first is True
        with pytest.raises(Cancelled):
            await second
        b.release()
        b.release()  # idempotent
        return queue.admitted

    assert asyncio.run(scenario()) == 0


def test_text_must_be_proper_unicode(client):
    """A lone surrogate in any text field is a 422 before any work, never a 500 after it."""
    for raw in (
        b'{"model": "t2i", "prompt": "a red \\ud800 circle", "num_images": 1, "steps": 2}',
        b'{"model": "diffusion", "class_name": "\\udfff"}',
        b'{"model": "\\ud800"}',
        b'{"model": "t2i", "prompt": "x", "\\ud800": 1}',
    ):
        r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        error = r.json()["error"]
        assert "\n" not in error
    raw = b'{"model": "t2i", "prompt": "\\ud800"}'
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert "prompt" in r.json()["error"] and "Unicode" in r.json()["error"]


def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(registry):
    """Rotating X-Forwarded-For does not escape the per-client bucket: uvicorn reads proxy headers only
    from --forwarded-allow-ips."""
    from genlab.server.app import uvicorn_config

    app = create_app(registry, ServerLimits(burst=2, rate_per_minute=1), allowed_hosts=("127.0.0.1",))
    body = {"model": "gan", "num_images": 1}
    with _live(app) as url:
        statuses = [
            httpx.post(
                f"{url}/api/generate", json=body, headers={"X-Forwarded-For": f"10.0.0.{i}"}
            ).status_code
            for i in range(3)
        ]
    assert statuses == [200, 200, 429]
    trusted = uvicorn_config(app, "127.0.0.1", 8000, "10.1.1.1")
    assert trusted.proxy_headers and trusted.forwarded_allow_ips == "10.1.1.1"


def test_rate_buckets_are_pruned_and_limits_are_finite():
    now = [0.0]
    bucket = RateLimiter(rate_per_minute=60, burst=10, clock=lambda: now[0])
    for i in range(20_000):
        bucket.take(f"client-{i}")
    assert bucket.clients == 20_000
    now[0] += bucket.refill_s  # every bucket is full again: the same as none
    bucket.take("late")
    assert bucket.clients == 1
    capped = RateLimiter(rate_per_minute=60, burst=10, clock=lambda: 0.0, max_clients=1000)
    for i in range(5000):
        capped.take(f"client-{i}")
    assert capped.clients <= 1000
    for bad in (float("nan"), float("inf"), 0.0):
        with pytest.raises(GenlabError, match="^`rate_per_minute` must be a finite number"):
            ServerLimits(rate_per_minute=bad)
    with pytest.raises(GenlabError, match="^`max_eps` must be in"):
        ServerLimits(max_eps=float("nan"))
    r = CliRunner().invoke(cli, ["serve", "x", "--rate-per-minute", "nan"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "error: --rate-per-minute must be a finite number" in r.output and "`" not in r.output


def test_foreign_hosts_and_cross_site_requests_are_refused(registry, client):
    r = client.get("/api/models", headers={"host": "evil.example"})  # DNS rebinding
    assert r.status_code == 400 and "--allowed-host" in r.json()["error"]
    assert client.get("/api/models", headers={"host": "testserver:80"}).status_code == 200
    anyhost = TestClient(create_app(registry))  # library use: any host
    assert anyhost.get("/api/models", headers={"host": "evil.example"}).status_code == 200
    form = {"model": "classifier", "index": "0", "eps": "0"}
    for headers in (
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://testserver:8080"},  # another port is another origin
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"referer": "http://evil.example/page.html"},
    ):
        r = client.post("/api/attack", data=form, headers=headers)
        assert r.status_code == 403 and "cross-site" in r.json()["error"], headers
    body = {"model": "gan", "num_images": 1}
    assert (
        client.post("/api/generate", json=body, headers={"origin": "http://evil.example"}).status_code == 403
    )
    for headers in ({"origin": "http://testserver"}, {"sec-fetch-site": "same-origin"}, {}):
        assert client.post("/api/attack", data=form, headers=headers).status_code == 200, headers
    assert client.get("/api/models", headers={"origin": "http://evil.example"}).status_code == 200  # reads


def test_allowed_hosts_of_a_bound_address():
    from genlab.server.guard import allowed_hosts

    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("10.1.2.3", ["genlab.lan"]) == {"10.1.2.3", "genlab.lan"}
    everywhere = allowed_hosts("0.0.0.0")
    assert {"localhost", "127.0.0.1"} <= everywhere and "0.0.0.0" not in everywhere


def test_request_bodies_are_capped_while_read(registry, client):
    """A body over the limit is refused with 413 JSON: at once when Content-Length says so, and after at
    most the limit when it does not (chunked): the rest is never read."""
    r = client.post("/api/generate", json={"model": "t2i", "prompt": "x" * 3_000_000})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    import asyncio

    limits = ServerLimits(max_upload_bytes=100_000)
    app = create_app(registry, limits, allowed_hosts=HOSTS)
    chunk, read, sent = 50_000, [0], []

    async def receive():
        read[0] += 1
        return {"type": "http.request", "body": b" " * chunk, "more_body": read[0] < 1000}  # 50 MB

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/generate", "raw_path": b"/api/generate", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and "larger than" in json.loads(sent[1]["body"])["error"]
    assert read[0] * chunk <= limits.max_body_bytes + chunk


def test_served_images_are_the_runs_own_held_out_split(served_runs, tmp_path, monkeypatch):
    """A run whose config names folder:/anywhere does not publish that folder: only built-in data, folders
    inside the run, or folders the operator names (--data-root) are shown."""
    secret = tmp_path / "secret"
    for label in ("a", "b"):
        (secret / label).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (8, 8), 10 * i).save(secret / label / f"{i}.png")
    run = tmp_path / "stolen"
    shutil.copytree(served_runs / "classifier", run)
    config = json.loads((run / "config.json").read_text())
    config["data"]["name"] = f"folder:{secret}"
    (run / "config.json").write_text(json.dumps(config))
    registry = Registry([run])
    assert registry.entries["stolen"].describe()["dataset_images"] == 0 and "not served" in registry.notes[0]
    assert "`data_roots` FOLDER serves data inside FOLDER" in registry.notes[0]
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # start, say what is served, stop
    said = CliRunner().invoke(cli, ["serve", str(run)], catch_exceptions=False).output
    assert "not served" in said and "--data-root FOLDER serves data inside FOLDER" in said and "`" not in said
    assert "serving 1 run(s) at http://localhost:8000/" in said
    client = TestClient(create_app(registry, allowed_hosts=HOSTS))
    r = client.get("/api/models/stolen/images/0")
    assert r.status_code == 404 and "upload" in r.json()["error"]
    r = client.post("/api/attack", data={"model": "stolen", "index": "0"})
    assert r.status_code == 422 and "upload" in r.json()["error"]
    trusted = Registry([run], data_roots=[secret])  # the operator vouches for the folder
    assert trusted.entries["stolen"].describe()["dataset_images"] > 0 and not trusted.notes
    shutil.move(secret, run / "data")  # data inside the run directory is the run's own
    config["data"]["name"] = f"folder:{run / 'data'}"
    (run / "config.json").write_text(json.dumps(config))
    assert Registry([run]).entries["stolen"].describe()["dataset_images"] > 0


def test_metrics_skip_rows_that_are_not_records(client, monkeypatch):
    from genlab import rundir

    rows = [[1, 2], "text", None, {"event": "train", "step": 1, "loss": float("nan"), "lr": 0.1}]
    monkeypatch.setattr(rundir, "read_metrics", lambda run: rows)
    r = client.get("/api/models/diffusion/metrics")
    assert r.status_code == 200 and r.json()["train"] == [{"step": 1, "lr": 0.1}]


def test_the_page_writes_no_html_from_strings(client):
    """Every string is text in the page (the browser test checks a hostile class name end to end)."""
    page = client.get("/").text
    assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", page)
