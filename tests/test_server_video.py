"""The web app serving video runs: a text and a class run (trained here, tiny) are listed with their
conditioning and clip length, generate N clips of T frames (animated GIFs and frame strips), stream strips
of the clips as they emerge and then the result, and refuse what the run or the server's limits cannot
do with a 422 that says why."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from genlab.bench.load import free_port
from genlab.cli import cli
from genlab.errors import GenlabError
from genlab.server.app import create_app
from genlab.server.encoding import gif_data_url, strip_data_url
from genlab.server.errors import Rejected
from genlab.server.limits import ServerLimits
from genlab.server.registry import Entry, Registry
from genlab.server.routes.generate import GenerateRequest, _check_generate

HOSTS = ("testserver",)
# The smallest network that builds (attention wants 32 channels) and a 20-clip validation split, so that the
# final evaluation and sample grid take moments.
TINY = ["--base-channels", "8", "--channel-mults", "1,4", "--attention-levels", "", "--temporal-levels", "1",
        "--steps", "2", "--batch-size", "2", "--val-fraction", "0.005", "--sample-steps", "1",
        "--eval-every", "0", "--sample-every", "0", "--eval-samples", "0", "--no-progress"]  # fmt: skip
MAX_FRAMES = 6  # the server's limit, below the runs' own clip length (8): the default is cut to it


def _train(out, *args: str) -> None:
    args = ["train", "video", *TINY, "--out", str(out), *args]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-serve")
    _train(root / "text")  # moving-shapes and their captions: 8 frames of 3 x 32 x 32
    _train(root / "motion", "--cond", "class")  # the same clips, labelled by direction
    _train(root / "twostage", "--frame-cond", "0.5", "--factorized")  # a first frame, then the rest
    return Registry([root / "text", root / "motion", root / "twostage"])


@pytest.fixture()
def client(runs):
    limits = ServerLimits(max_clips=4, max_frames=MAX_FRAMES, max_steps=20, burst=1000)
    return TestClient(create_app(runs, limits, allowed_hosts=HOSTS))


def _image(url: str, kind: str) -> Image.Image:
    prefix = f"data:image/{kind};base64,"
    assert url.startswith(prefix), url[:40]
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def _check_clip(gif_url: str, strip_url: str, frames: int, side: int) -> None:
    """An animated GIF of ``frames`` frames of side ``side`` that loops, and a strip of those frames in a
    row, one pixel apart (make_grid's layout)."""
    gif = _image(gif_url, "gif")
    assert gif.n_frames == frames and gif.size == (side, side) and gif.info.get("loop") == 0
    strip = _image(strip_url, "png")
    assert strip.size == (frames * (side + 1) + 1, side + 2)


def test_video_runs_are_listed_with_their_conditioning_and_clip_length(client):
    info = client.get("/api/models").json()
    models = {m["name"]: m for m in info["models"]}
    text, motion = models["text"], models["motion"]
    assert text["kind"] == motion["kind"] == "video"
    assert (text["conditioning"], text["classes"]) == ("text", [])
    assert (text["channels"], text["image_size"]) == (3, 32)
    assert motion["conditioning"] == "class" and motion["classes"][:2] == ["right", "left"]
    assert len(motion["classes"]) == 8
    assert text["frames"] == 8 and text["max_frames"] == 64 and text["steps"] is True
    assert info["limits"]["max_clips"] == 4 and info["limits"]["max_frames"] == MAX_FRAMES


@pytest.mark.parametrize(
    "body, side",
    [
        ({"model": "text", "prompt": "a red circle moving right", "num_images": 2, "num_frames": 4}, 32),
        ({"model": "motion", "class_name": "up and right", "num_images": 3, "num_frames": 3}, 32),
        ({"model": "motion", "num_images": 1}, 32),  # any class; the run's length, cut to the limit
    ],
)
def test_generate_returns_n_clips_of_t_frames(client, body, side):
    r = client.post("/api/generate", json={**body, "steps": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    frames = body.get("num_frames", MAX_FRAMES)
    assert len(out["images"]) == len(out["strips"]) == body["num_images"]
    for gif, strip in zip(out["images"], out["strips"], strict=True):
        _check_clip(gif, strip, frames, side)
    assert out["settings"]["num_frames"] == frames and out["settings"]["model"] == body["model"]
    assert out["settings"]["class_name"] == body.get("class_name")


def test_the_seed_fixes_the_clips(client):
    body = {"model": "motion", "class_name": "down", "num_images": 1, "num_frames": 2, "steps": 1}
    first, again = (client.post("/api/generate", json=body).json() for _ in range(2))
    other = client.post("/api/generate", json={**body, "seed": 1}).json()
    assert first["images"] == again["images"] and first["images"] != other["images"]


def test_the_stream_sends_strips_of_the_clips_at_every_step_then_the_result(client):
    body = {"model": "text", "prompt": "a large blue square moving up", "num_images": 2, "num_frames": 3}
    with client.stream("POST", "/api/generate/stream", json={**body, "steps": 3}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    lines = [block.split("\n") for block in text.strip().split("\n\n")]
    events = [(e.removeprefix("event: "), json.loads(d.removeprefix("data: "))) for e, d in lines]
    progress = [d for e, d in events if e == "progress"]
    assert [(d["step"], d["total"]) for d in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    for d in progress:  # one strip per clip, as the model predicts the clips at this step
        assert len(d["preview"]) == 2
        assert _image(d["preview"][0], "png").size == (3 * 33 + 1, 34)
    kind, done = events[-1]
    assert kind == "done" and done["settings"]["num_frames"] == 3
    for gif, strip in zip(done["images"], done["strips"], strict=True):
        _check_clip(gif, strip, 3, 32)


def test_a_factorized_run_streams_both_stages(client):
    """Emu Video's two stages: the clip drawn for its first frame, then the clip continuing it, counted on."""
    body = {"model": "twostage", "prompt": "a large blue square moving up", "num_frames": 3, "steps": 2}
    with client.stream("POST", "/api/generate/stream", json=body) as r:
        text = "".join(r.iter_text())
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    progress = [json.loads(d.removeprefix("data: ")) for e, d in events if e == "event: progress"]
    assert [(d["step"], d["total"]) for d in progress] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert events[-1][0] == "event: done"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model": "text", "prompt": "a red circle moving up", "num_frames": 7},
         f"num_frames must be between 2 and {MAX_FRAMES} (this server's limit; got 7)"),
        ({"model": "text", "prompt": "a red circle", "num_frames": 1}, "num_frames must be between 2"),
        ({"model": "text", "prompt": "a red circle moving up", "num_images": 5},
         "num_images must be between 1 and 4 (clips of a video run; got 5)"),
        ({"model": "text", "prompt": "a red circle", "steps": 21}, "steps must be between 1 and 20"),
        ({"model": "text"}, "text is a text-to-video model: give a prompt"),
        ({"model": "text", "prompt": "a red circle", "class_name": "3"}, "takes a prompt, not a class"),
        ({"model": "text", "prompt": "a red circle", "negative_prompt": "blue"}, "takes no negative prompt"),
        ({"model": "motion", "prompt": "a red circle moving left"}, "motion takes no prompt"),
        ({"model": "motion", "class_name": "sideways"}, "unknown class 'sideways'"),
        ({"model": "motion", "class_name": "8"}, "out of range"),
        ({"model": "motion", "sampler": "magic"}, "unknown sampler"),
        ({"model": "motion", "num_frames": "many"}, "num_frames"),
    ],
)  # fmt: skip
def test_bad_video_requests_get_a_422_that_says_why(client, body, message):
    for path in ("/api/generate", "/api/generate/stream"):  # refused before the stream starts
        r = client.post(path, json=body)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert message in error and "\n" not in error
    assert client.get("/api/health").json()["jobs"] == 0


def test_image_runs_take_no_num_frames():
    request = GenerateRequest(model="gan", num_images=1, num_frames=4)
    for kind in ("gan", "diffusion", "text-to-image"):
        with pytest.raises(Rejected, match="^gan makes images, not clips: leave num_frames out$"):
            _check_generate(request, Entry("gan", Path("gan"), kind, model=None), ServerLimits())


def test_clips_longer_than_the_run_takes_are_refused_by_its_own_limit(runs):
    client = TestClient(create_app(runs, ServerLimits(max_frames=100), allowed_hosts=HOSTS))
    r = client.post("/api/generate", json={"model": "motion", "num_frames": 65})
    assert r.status_code == 422
    assert r.json()["error"] == "num_frames must be between 2 and 64 (the longest clip motion takes; got 65)"


@pytest.mark.parametrize(
    "field, value, said", [("max_clips", 0, "at least 1"), ("max_frames", 1, "at least 2")]
)
def test_the_video_limits_are_checked(field, value, said):
    with pytest.raises(GenlabError, match=f"^`{field}` must be {said}"):
        ServerLimits(**{field: value})


def test_gray_clips_encode_too():
    clip = torch.linspace(0, 1, 4).reshape(4, 1, 1, 1).expand(4, 1, 5, 5)  # four frames, darkest first
    gif = _image(gif_data_url(clip), "gif")
    assert gif.n_frames == 4 and gif.size == (5, 5)
    shades = []
    for i in range(4):
        gif.seek(i)
        shades.append(gif.convert("L").getpixel((2, 2)))
    assert shades == [0, 85, 170, 255]
    assert _image(strip_data_url(clip), "png").size == (4 * 6 + 1, 7)


def test_the_page_offers_frames_and_shows_strips(client):
    page = client.get("/").text  # tests/test_server.py checks that it writes no markup from strings
    assert page.startswith("<!doctype html>")  # nothing before it, which a browser would show as text
    assert 'id="frames"' in page and '"video"' in page and "result.strips" in page


@pytest.fixture()
def browser(tmp_path):
    """Headless Chromium, as tests/test_browser.py drives it (skipped, with the reason, where it is not
    installed)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("the browser test needs Debian's chromium and chromium-driver (make test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra (make test)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


@contextlib.contextmanager
def _served(registry: Registry) -> Iterator[str]:
    import uvicorn

    port = free_port()
    app = create_app(registry, ServerLimits(max_frames=MAX_FRAMES), allowed_hosts=("127.0.0.1",))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_page_previews_strips_then_plays_each_clip_above_its_frames(browser, runs):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def wait(condition):
        return WebDriverWait(browser, 120, poll_frequency=0.05).until(condition)

    def value(element_id: str, text: str) -> None:
        field = browser.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(text)

    with _served(runs) as url:
        browser.get(url)
        wait(lambda d: len(Select(d.find_element(By.ID, "gen-model")).options) == 3)
        Select(browser.find_element(By.ID, "gen-model")).select_by_value("text")
        shown = {i: browser.find_element(By.ID, i).is_displayed() for i in ("prompt", "negative", "frames")}
        assert shown == {"prompt": True, "negative": False, "frames": True}
        assert browser.find_element(By.ID, "frames").get_attribute("value") == str(MAX_FRAMES)
        assert browser.find_element(By.ID, "num-label").text == "Clips"
        browser.find_element(By.ID, "prompt").send_keys("a small red circle moving right")
        browser.execute_script("document.getElementById('steps').value = 2")  # a slider: set, as a drag would
        value("num", "2")
        value("frames", "3")
        browser.execute_script(  # what the preview shows at each step, as it changes
            "const p = document.getElementById('preview'); window.seen = []; new MutationObserver(() => "
            "window.seen.push([...p.querySelectorAll(':scope > img')].map((i) => i.className)))"
            ".observe(p, {childList: true})"
        )
        browser.find_element(By.ID, "generate").click()
        card = wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .card"))[0]
        wait(lambda d: d.execute_script("return [...document.images].every(i => i.complete)"))
        previews = [s for s in browser.execute_script("return window.seen") if s]
        assert previews and all(s == ["strip", "strip"] for s in previews)
        clips = card.find_elements(By.CSS_SELECTOR, ".clip")
        assert len(clips) == 2
        for clip in clips:
            gif, strip = clip.find_elements(By.TAG_NAME, "img")
            assert gif.get_attribute("src").startswith("data:image/gif;base64,")
            sizes = browser.execute_script("return [...arguments].map((i) => i.naturalWidth)", gif, strip)
            assert sizes == [32, 3 * 33 + 1]
        assert '"a small red circle moving right", 3 frames, 2 steps' in card.text
        assert browser.find_element(By.ID, "gen-error").text == ""

        # a class run: the class replaces the prompt; a clip too long is refused, and the page says why
        Select(browser.find_element(By.ID, "gen-model")).select_by_value("motion")
        assert not browser.find_element(By.ID, "prompt").is_displayed()
        assert browser.find_element(By.ID, "class").is_displayed()
        value("frames", str(MAX_FRAMES + 1))
        browser.find_element(By.ID, "generate").click()
        wait(lambda d: d.find_element(By.ID, "gen-error").text)
        assert "num_frames must be between 2 and 6" in browser.find_element(By.ID, "gen-error").text
