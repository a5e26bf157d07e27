"""Shared fixtures: the real pretrained MiniLM BERT (offline), loaded once per session.

- ``minilm_path``: folder of all-MiniLM-L6-v2 (6 layers, d=384).
- ``minilm_tokenizer``: its tokenizer.
- ``minilm_classifier``: a fresh, private ``BertForSequenceClassification`` (2 labels, eval
  mode, classifier head drawn with seed 0) for each test: a deep copy of one loaded
  per session, so tests may patch or train it freely.
- ``minilm_batch``: ``input_ids``/``attention_mask`` (4 real Rotten Tomatoes snippets,
  padded) and ``labels``.

The tests sit in folders laid out like the package (core/, patching/, integrations/, skip/,
interpret/, examples/, docs/, architecture/, lab/). The helpers that tests in several folders
import as top-level modules (``live_gates``, ``peer_helpers``) sit here, beside this file, and
this folder is put on ``sys.path`` so they import from any folder below it.
"""

from __future__ import annotations

import copy
import pathlib
import sys

import pytest
import torch

_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    pytest.importorskip("transformers")
    from vectorgate_lab.assets import minilm_path as _minilm_path

    try:
        return _minilm_path()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(f"pretrained MiniLM not installed: {err}")


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def _minilm_classifier_pristine(minilm_path: str):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "classifier is newly initialised" report is expected
    try:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    finally:
        logging.set_verbosity(verbosity)
    return model.eval()


@pytest.fixture
def minilm_classifier(_minilm_classifier_pristine):
    return copy.deepcopy(_minilm_classifier_pristine)


@pytest.fixture(scope="session")
def minilm_batch(minilm_tokenizer) -> dict[str, torch.Tensor]:
    pytest.importorskip("pandas")
    from vectorgate_lab.assets import load_rotten_tomatoes

    try:
        data = load_rotten_tomatoes()
    except ImportError as err:
        pytest.skip(f"Rotten Tomatoes data not installed: {err}")
    idx = torch.arange(4)
    sub = data.subset(idx)
    batch = dict(minilm_tokenizer(sub.texts, padding=True, truncation=True, max_length=32, return_tensors="pt"))
    batch["labels"] = sub.labels
    return batch
