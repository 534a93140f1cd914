"""The segmentation U-Net of Ronneberger et al. (2015): the paper's geometry, the weight map, elastic
deformation keeping image and mask aligned, overlap-tile prediction equal to whole-image prediction, and
the procedural cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.errors import GenlabError
from genlab.nn.seg_unet import SegUNet, SegUNetConfig, fit_input, output_size
from genlab.segmentation.augment import elastic_deform
from genlab.segmentation.cells import (
    CellsConfig,
    make_cell_image,
    make_cells,
    semantic_target,
    separated_pairs,
    touching_pairs,
)
from genlab.segmentation.tiling import predict_tiled, predict_whole
from genlab.segmentation.weights import class_balance, unet_weight_map


def test_the_papers_geometry_572_to_388():
    assert output_size(572, 4) == 388 and fit_input(388, 4) == 572
    model = SegUNet(SegUNetConfig(base_channels=2, depth=4, batch_norm=False))  # the paper's shape, narrow
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    paper = SegUNet(SegUNetConfig(base_channels=64, depth=4, batch_norm=False))
    widths = [block[0].out_channels for block in paper.down] + [paper.bottom[0].out_channels]
    assert widths == [64, 128, 256, 512, 1024]
    with pytest.raises(GenlabError, match="does not fit"):
        output_size(570, 4)


def test_weight_map_is_largest_between_touching_cells_and_w_c_far_away():
    instances = np.zeros((60, 60), dtype=np.int32)
    instances[20:40, 10:29] = 1
    instances[20:40, 31:50] = 2  # a 2-pixel gap between the two cells at columns 29-30
    target = semantic_target(instances)
    w = unet_weight_map(instances, target, w0=10.0, sigma=5.0)
    wc = class_balance(target)
    gap = w[20:40, 29:31]
    assert gap.min() > 0.9 * w.max() and np.unravel_index(w.argmax(), w.shape)[1] in (29, 30)
    # d1 = 1, d2 = 2 in the gap: w = w_c + 10 exp(-9 / 50)
    assert w[30, 29] == pytest.approx(wc[30, 29] + 10 * np.exp(-9 / 50), rel=1e-5)
    assert np.allclose(w[0:3, 0:3], wc[0:3, 0:3], atol=1e-4)  # far from both cells: w_c only
    assert np.allclose(w[target == 1], wc[target == 1])  # cells keep their class weight


def test_elastic_deformation_keeps_image_and_mask_aligned():
    _, instances = make_cells(1, seed=3)
    mask = instances[0][None]
    image = (mask > 0).float()  # an image that is its own mask
    g = torch.Generator().manual_seed(0)
    warped, labels = elastic_deform(image, mask, generator=g)
    assert labels.dtype == mask.dtype and set(labels.unique().tolist()) <= set(mask.unique().tolist())
    agree = ((warped[0] > 0.5) == (labels[0] > 0)).float().mean()
    assert agree > 0.99 and not torch.equal(labels, mask)
    same, same_labels = elastic_deform(image, mask, sigma=0.0)
    assert torch.allclose(same, image, atol=1e-5) and torch.equal(same_labels, mask)


def test_overlap_tile_equals_whole_image_prediction():
    torch.manual_seed(0)
    model = SegUNet(SegUNetConfig(base_channels=4, depth=2, batch_norm=False)).eval()
    image = torch.rand(1, 40, 40)
    whole = predict_whole(model, image)
    tiled = predict_tiled(model, image, tile=12)
    assert tiled.shape == whole.shape == (2, 40, 40)
    assert torch.allclose(tiled, whole, atol=1e-5)
    odd = predict_tiled(model, torch.rand(1, 37, 53), tile=16)  # any size
    assert odd.shape == (2, 37, 53)


def test_cells_are_deterministic_and_touch():
    a, ia = make_cells(3, seed=5)
    b, ib = make_cells(3, seed=5)
    assert torch.equal(a, b) and torch.equal(ia, ib)
    assert a.shape == (3, 1, 96, 96) and a.min() >= 0 and a.max() <= 1
    assert sum(len(touching_pairs(i.numpy())) for i in ia) > 0
    target = semantic_target(ia[0].numpy())
    good, total = separated_pairs(ia[0].numpy(), target)  # the target itself separates every pair
    assert good == total
    merged = (ia[0].numpy() > 0).astype(np.int64)  # no seams: touching cells merge
    assert separated_pairs(ia[0].numpy(), merged)[0] < total or total == 0
    with pytest.raises(GenlabError):
        CellsConfig(size=8)


def test_train_segmenter_and_segment_commands(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from genlab.cli import cli
    from genlab.data import save_grid

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = run(
        "train", "segmenter", "--train-images", "4", "--val-images", "2", "--size", "32", "--depth", "2",
        "--base-channels", "4", "--steps", "2", "--batch-size", "2", "--eval-every", "2",
        "--sample-every", "2", "--no-progress", "--out", str(tmp_path / "seg"),
    )  # fmt: skip
    assert "cell IoU" in out and "touching pairs separated" in out
    images, _ = make_cells(1, seed=9, cfg=CellsConfig(size=50))
    picture = save_grid(tmp_path / "cells.png", images, scale=1)
    size = Image.open(picture).size
    run("segment", str(tmp_path / "seg"), str(picture), "--out", str(tmp_path / "mask.png"), "--tile", "16")
    assert Image.open(tmp_path / "mask.png").size == size  # any size in, the same size out
    assert Image.open(tmp_path / "mask_overlay.png").mode == "RGB"
    run("train", "segmenter", "--out", str(tmp_path / "seg"), "--resume", "--steps", "3", "--no-progress")
    bad = CliRunner().invoke(cli, ["segment", str(tmp_path / "seg"), str(picture), "--tile", "0"])
    assert bad.exit_code == 2 and "--tile" in bad.output


@pytest.mark.parametrize("task", ["superres", "denoise"])
def test_img2img_restores_and_its_commands(tmp_path, task):
    from click.testing import CliRunner

    from genlab.cli import cli
    from genlab.data import DataConfig, save_grid
    from genlab.img2img.task import Img2ImgTask, RestorationConfig, degrade, restore

    t = Img2ImgTask(DataConfig("digits"), RestorationConfig(task), base_channels=4, depth=1)
    clean = t.train_data.images[:4]
    degraded = degrade(clean, t.restoration, torch.Generator().manual_seed(0))
    assert degraded.shape == clean.shape and not torch.allclose(degraded, clean)
    torch.nn.init.zeros_(t.model.head.weight)
    torch.nn.init.zeros_(t.model.head.bias)
    assert torch.equal(restore(t.model, degraded), degraded)  # a zero correction returns the input
    run = tmp_path / task

    def cli_run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = cli_run("train", "img2img", "--data", "digits", "--task", task, "--depth", "1", "--steps", "3",
                  "--eval-every", "3", "--sample-every", "3", "--no-progress", "--out", str(run))  # fmt: skip
    assert "PSNR of the output" in out and "PSNR of the input" in out
    picture = save_grid(tmp_path / "in.png", clean[:1], scale=1)
    cli_run("img2img", str(run), str(picture), "--out", str(tmp_path / "out.png"))
    assert (tmp_path / "out.png").is_file()
    with pytest.raises(GenlabError, match="`task`"):
        RestorationConfig("colorize")


@pytest.mark.parametrize("size", [16, 17, 21])
def test_the_smallest_images_the_segmenter_allows_are_drawn(size):
    """`size` may be as small as 16; cells as large as 11 pixels in radius must still fit inside."""
    for seed in range(20):
        image, instances = make_cell_image(CellsConfig(size=size), np.random.default_rng(seed))
        assert image.shape == instances.shape == (size, size)
