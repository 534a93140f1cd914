"""Evaluating video runs: the frame data sets, the clip classifier behind FVD, FVD and per-frame FID, and
`genlab eval` on a video run."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from genlab.cli import cli
from genlab.data import DataConfig, list_datasets, load_clips, load_dataset, load_splits, registry
from genlab.data.moving import ClipDataset
from genlab.errors import GenlabError
from genlab.evaluation import features as image_features
from genlab.evaluation.features import FeatureExtractor
from genlab.nn.video_classifier import VideoClassifier, VideoClassifierConfig
from genlab.video import features as video_features
from genlab.video.evaluation import frame_fid, frechet_video_distance
from genlab.video.features import video_extractor

FEW_CLIPS = 60  # clips in each clip data set while a test runs: seconds, not minutes
TINY_FRAME_RECIPE = dict(steps=4, batch_size=16, lr=3e-3, warmup_steps=0, ema_decay=0.0, seed=0, widths=(4,))
TINY_CLIP_RECIPE = dict(
    steps=3, batch_size=8, lr=3e-3, warmup_steps=0, ema_decay=0.0, seed=0, widths=(4,), time_strides=(1,)
)


@pytest.fixture
def few_clips(monkeypatch):
    monkeypatch.setattr(registry, "CLIP_COUNT", FEW_CLIPS)


# ---------------------------------------------------------------------------------- frame data sets


def test_shape_frames_are_the_clips_frames_labelled_by_colour_and_shape(few_clips):
    clips = load_clips("moving-shapes", "all")
    train, val = load_splits("moving-shapes-frames")
    assert len(train) + len(val) == FEW_CLIPS * 8 and train.image_size == 32 and train.channels == 3
    assert train.class_names[:4] == ["red circle", "red square", "red triangle", "green circle"]
    for part in (train, val):
        for i in range(0, len(part), 7):
            a = part.attributes[i]
            truth = clips.attributes[a["clip"]]["objects"][0]
            assert part.class_names[int(part.labels[i])] == f"{truth['color']} {truth['shape']}"
            assert torch.equal(part.images[i], clips.clips[a["clip"], a["frame"]])
            assert a["objects"][0]["center"] == truth["track"][a["frame"]]
            assert part.captions[i] == f"a {truth['size']} {truth['color']} {truth['shape']}"
    train_clips = {a["clip"] for a in train.attributes}
    val_clips = {a["clip"] for a in val.attributes}
    assert not train_clips & val_clips and len(train_clips | val_clips) == FEW_CLIPS  # split by clip
    held_out = load_clips("moving-shapes", "val")  # the same clips as the clip data set holds out
    assert torch.equal(val.images, held_out.clips.flatten(0, 1))


def test_mnist_frames_are_labelled_by_their_digit_and_load_like_any_image_data(few_clips):
    clips = load_clips("moving-mnist", "all")
    frames = load_dataset("moving-mnist-frames", "all")
    assert len(frames) == FEW_CLIPS * 8 and frames.class_names == [str(d) for d in range(10)]
    digits = torch.tensor([a["objects"][0]["digit"] for a in clips.attributes])
    assert torch.equal(frames.labels, digits.repeat_interleave(8))
    assert torch.equal(frames.labels, clips.labels.repeat_interleave(8))
    assert frames.captions[8 * 3] == ("an" if digits[3] == 8 else "a") + f" {int(digits[3])}"
    val = load_dataset("moving-mnist-frames", "val", seed=1)
    assert len(val) == 8 * len(load_clips("moving-mnist", "val", seed=1))
    with pytest.raises(GenlabError, match="^moving-mnist-frames comes at 48 px"):
        load_dataset("moving-mnist-frames", image_size=28)
    with pytest.raises(GenlabError, match="moving-shapes-frames holds its frames"):
        load_dataset("moving-shapes")


def test_the_catalogue_lists_the_frame_data_sets(few_clips):
    infos = {info.name: info for info in list_datasets()}
    for name, channels, side, classes in (
        ("moving-shapes-frames", 3, 32, 18),
        ("moving-mnist-frames", 1, 48, 10),
    ):
        info = infos[name]
        ds = load_dataset(name, "val")
        assert (info.channels, info.image_size, info.num_classes) == (channels, side, classes)
        assert (ds.channels, ds.image_size, ds.num_classes) == (channels, side, classes)
        assert info.size == 4000 * 8
    listing = CliRunner().invoke(cli, ["data", "list"])
    assert "moving-shapes-frames" in listing.output and "moving-mnist-frames" in listing.output


# ---------------------------------------------------------------------------------- the clip classifier


def _ramps(n: int, up: bool | None, seed: int = 0) -> ClipDataset:
    """Gray clips (n, 4, 1, 8, 8) that brighten (label 0) or dim (label 1) frame by frame around a random
    level: every frame alone could belong to either class; only the order of the frames tells them apart.
    ``up`` None: half of each, alternating."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2 if up is None else torch.full((n,), 0 if up else 1)
    level = 0.3 + 0.4 * torch.rand(n, generator=g)
    slope = torch.where(labels == 0, 0.1, -0.1)
    t = torch.arange(4) - 1.5
    clips = (level[:, None] + slope[:, None] * t)[:, :, None, None, None].expand(n, 4, 1, 8, 8)
    clips = (clips + 0.02 * torch.randn(n, 4, 1, 8, 8, generator=g)).clamp(0, 1)
    return ClipDataset("ramps", clips, ["ramp"] * n, labels, ["brighter", "dimmer"], [{}] * n)


def test_video_classifier_shapes_and_checks():
    cfg = VideoClassifierConfig(in_channels=1, image_size=8, frames=4, num_classes=2, widths=(4, 6),
                                time_strides=(1, 2), mean=(0.5,), std=(0.2,))  # fmt: skip
    model = VideoClassifier(cfg).eval()
    clips = torch.rand(3, 4, 1, 8, 8)
    assert model.features(clips).shape == (3, 6) and model(clips).shape == (3, 2)
    assert model(torch.rand(2, 7, 1, 8, 8)).shape == (2, 2)  # any clip length: the pool is global
    with pytest.raises(GenlabError, match="takes clips"):
        model(torch.rand(3, 1, 8, 8))
    with pytest.raises(GenlabError, match="time_strides"):
        VideoClassifierConfig(widths=(4, 8), time_strides=(1,))


def test_the_clip_classifier_learns_the_order_of_frames_and_is_cached(tmp_path):
    splits = (_ramps(128, None, seed=0), _ramps(64, None, seed=1))
    recipe = dict(steps=20, batch_size=32, lr=1e-2, warmup_steps=0, ema_decay=0.0, seed=0, widths=(8,),
                  time_strides=(1,))  # fmt: skip
    said: list[str] = []
    data = DataConfig("ramps")
    first = video_extractor(data, tmp_path, recipe, splits, progress=False, log=said.append)
    assert first.val_accuracy >= 0.95, first.val_accuracy
    assert (first.classify(splits[1].clips) == splits[1].labels).float().mean() >= 0.95
    again = video_extractor(data, tmp_path, recipe, splits, progress=False, log=said.append)
    assert len(said) == 1 and again.key == first.key  # trained once
    (entry,) = (tmp_path / "video-classifiers").iterdir()
    assert not entry.name.startswith(".")

    # FVD: a set against itself is 0; clips played backwards (the same frames) are far, per-frame FID is not
    up, down = _ramps(64, True, seed=2), _ramps(64, True, seed=2).clips.flip(1)
    assert frechet_video_distance(first, up.clips, up.clips)["value"] == pytest.approx(0.0, abs=1e-6)
    fvd = frechet_video_distance(first, up.clips, down, floor=_ramps(64, True, seed=3).clips)
    assert fvd["value"] > 10 * fvd["floor_real_train"] and fvd["value"] > 0.1
    assert "Unterthiner" in fvd["paper"] and fvd["real"] == fvd["generated"] == 64
    mean_pixel = FeatureExtractor("mean and spread", "test-mean", lambda x: torch.stack(
        [x.mean((1, 2, 3)), x.std((1, 2, 3))], 1), (1,), 8)  # fmt: skip
    real_frames = registry.clip_frames(_labelled(up), "ramp-frames", torch.arange(64))
    fid = frame_fid(mean_pixel, real_frames, down.flatten(0, 1))
    assert fid["value"] == pytest.approx(0.0, abs=1e-9) and fid["generated"] == 64 * 4


def _labelled(clips: ClipDataset) -> ClipDataset:
    """``clips`` with the per-clip attributes clip_frames reads (a digit, its track)."""
    track = [[0.0, 0.0]] * clips.frames
    attributes = [{"objects": [{"digit": 0, "track": track}]} for _ in range(len(clips))]
    return ClipDataset(
        "moving-mnist", clips.clips, clips.captions, clips.labels, clips.class_names, attributes
    )


# ---------------------------------------------------------------------------------- genlab eval RUN

NET = ["--base-channels", "16", "--channel-mults", "1,2", "--attention-levels", "1", "--temporal-levels", "1"]
SHORT = ["--steps", "2", "--batch-size", "2", "--eval-every", "0", "--sample-every", "0",
         "--eval-samples", "0", "--sample-steps", "1", "--guidance", "1", "--no-progress"]  # fmt: skip
EVAL = ["--n", "4", "--steps", "2", "--guidance", "1", "--no-progress"]


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def tiny_recipes(monkeypatch, few_clips):
    monkeypatch.setattr(image_features, "EXTRACTOR_RECIPE", TINY_FRAME_RECIPE)
    monkeypatch.setattr(video_features, "VIDEO_CLASSIFIER_RECIPE", TINY_CLIP_RECIPE)


def test_eval_of_a_text_video_run_writes_every_number(tiny_recipes, tmp_path):
    run = tmp_path / "run"
    assert _invoke("train", "video", *NET, "--out", str(run), *SHORT).exit_code == 0
    result = _invoke("eval", str(run), *EVAL)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval.json").read_text())
    assert report["run"] == str(run) and report["kind"] == "video" and report["cond"] == "text"
    assert report["n"] == 4 and report["steps"] == 2 and report["guidance_scale"] == 1.0
    assert report["seconds_per_clip"] == pytest.approx(report["sampling_seconds"] / 4)
    assert report["motion_adherence"]["count"] == 4 and 0 <= report["motion_adherence"]["motion"] <= 1
    assert report["recognised_frames"]["generated"] == 4 * 8 and report["recognised_clips"]["generated"] == 4
    held_out = len(load_clips("moving-shapes", "val"))
    assert report["fvd"]["real"] == held_out and report["fid_frames"]["real"] == 8 * held_out
    assert report["fvd"]["value"] >= 0 and report["fid_frames"]["generated"] == 32
    assert (run / report["pictures"]["clips"]).is_file()
    for said in ("motion adherence", "FVD", "per-frame FID", "s per clip", "frames recognised as"):
        assert said in result.output

    bad = CliRunner().invoke(cli, ["eval", str(run), "--classifier", str(run)])
    assert bad.exit_code != 0 and bad.output.strip().splitlines() == [
        "error: --classifier does not apply to a video run: its clips are read by its data's own frame "
        "and clip classifiers"
    ]
    bad = CliRunner().invoke(cli, ["eval", str(run), "--sweep-steps", "5"])
    assert "--sweep-steps does not apply to a video run" in bad.output
    bad = CliRunner().invoke(cli, ["eval", str(run), "--n", "1"])
    assert bad.exit_code != 0 and "--n must be at least 2" in bad.output and "`" not in bad.output


def test_eval_of_a_class_video_run_counts_the_digits_recognised(tiny_recipes, tmp_path):
    run = tmp_path / "run"
    args = ("train", "video", *NET, "--cond", "class", "--data", "moving-mnist", "--out", str(run), *SHORT)
    assert _invoke(*args).exit_code == 0
    out = tmp_path / "report" / "video.json"
    result = _invoke("eval", str(run), *EVAL, "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["cond"] == "class" and "motion_adherence" not in report
    assert report["recognised_frames"]["generated"] == 32 and "digit asked for" in result.output
    assert (out.parent / "video_clips.png").is_file() and not (run / "eval.json").exists()
