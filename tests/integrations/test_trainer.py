"""A patched tiny BERT under transformers.Trainer and `accelerate launch`, on real review snippets.

The model and data live in tests/integrations/distributed_workers/trainer_worker.py (random-init
2-layer BERT, the real MiniLM tokenizer, 256 Rotten Tomatoes snippets).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("safetensors")

WORKER = pathlib.Path(__file__).resolve().parent / "distributed_workers" / "trainer_worker.py"


def load_worker():
    spec = importlib.util.spec_from_file_location("vectorgate_trainer_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def worker():
    return load_worker()


@pytest.fixture(scope="module")
def snippets(worker):
    return worker.Snippets()


def test_checkpoint_holds_the_gates_and_resume_restores_them(tmp_path, worker, snippets):
    from safetensors.torch import load_file

    model = worker.build_model()
    initial = worker.gate_tensors(model)
    trainer = worker.make_trainer(model, tmp_path / "a", snippets, max_steps=4, save_steps=2)
    trainer.train()
    final = worker.gate_tensors(trainer.model)
    assert all(not torch.equal(final[k], initial[k]) for k in final), "every gate tensor should train"

    # Trainer writes checkpoints with save_pretrained: the gates are in model.safetensors.
    saved = load_file(tmp_path / "a" / "checkpoint-2" / "model.safetensors")
    assert set(final) <= set(saved)
    assert all(not torch.equal(saved[k], initial[k]) for k in final)

    # Resume from step 2 with *different* gate init: the checkpoint must overwrite it, and
    # the last 2 steps (same data order, optimizer and scheduler state) must match exactly.
    other = worker.build_model(gate_seed=5)
    assert any(not torch.equal(v, initial[k]) for k, v in worker.gate_tensors(other).items())
    resumed = worker.make_trainer(other, tmp_path / "b", snippets, max_steps=4, save_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    for key, value in worker.gate_tensors(resumed.model).items():
        assert torch.equal(value, final[key]), key
    full, full_resumed = trainer.model.state_dict(), resumed.model.state_dict()
    for key in full:
        assert torch.equal(full[key], full_resumed[key]), key


def test_gate_only_training_with_trainer(tmp_path, worker, snippets):
    from vectorgate.patching import mark_only_gates_trainable

    model = worker.build_model()
    mark_only_gates_trainable(model)  # gates + the classifier head
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = worker.make_trainer(model, tmp_path, snippets, max_steps=3, save_steps=3)
    trainer.train()
    after = trainer.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".gate." in k or k.startswith("classifier.") for k in moved), sorted(moved)


def accelerate_command() -> str | None:
    """The ``accelerate`` CLI of this interpreter's environment (or on PATH)."""
    beside = pathlib.Path(sys.executable).parent / "accelerate"
    return str(beside) if beside.exists() else shutil.which("accelerate")


@pytest.mark.skipif(accelerate_command() is None, reason="the accelerate command is not installed")
def test_accelerate_launch_two_cpu_processes(tmp_path):
    # `--cpu` alone starts a single process; `--multi_gpu` on a machine without GPUs starts
    # torchrun workers that Accelerate runs on the CPU with gloo.
    cmd = [accelerate_command(), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", str(WORKER), "--out-dir", str(tmp_path), "--max-steps", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    ranks = [torch.load(tmp_path / f"gates_rank{r}.pt") for r in (0, 1)]
    for key, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][key]), f"ranks disagree on {key}"
        assert not torch.equal(value, ranks[0]["initial"][key]), f"{key} did not train"
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "checkpoint-4" / "model.safetensors")
    for key, value in ranks[0]["final"].items():
        assert torch.equal(saved[key], value), key
