"""Gated models under torch.distributed: 2 CPU processes (gloo) launched with torchrun.

One torchrun launch (tests/integrations/distributed_workers/equivalence.py) trains a gated timm ViT
under DDP and under FSDP2 (``fully_shard``), all parameters and gates only, and DDP under
``torch.compile``, and saves the gates from rank 0. Each run must land on the parameters of a single-process run on the
same global batches.

Tolerance: ``atol=1e-4, rtol=1e-4`` after 4 AdamW steps at lr 1e-2, i.e. within 0.25% of
the 0.04 that Adam can move an entry in 4 steps. The two processes sum gradients in a
different order than one process does, and Adam divides by sqrt(v), which magnifies that
rounding for entries with tiny gradients (the test prints the largest difference: run
``pytest tests/integrations/test_distributed.py -s``). A rank that trained on its own half without
gradient sync would be 0.08 off after these 4 steps.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("timm")
pytest.importorskip("safetensors")

WORKER = pathlib.Path(__file__).resolve().parent / "distributed_workers" / "equivalence.py"
ATOL, RTOL = 1e-4, 1e-4

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)


def load_worker():
    spec = importlib.util.spec_from_file_location("vectorgate_equivalence_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (a free rendezvous port, so parallel runs never collide)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        pytest.fail(f"torchrun exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def worker():
    return load_worker()


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory, worker):
    out_dir = tmp_path_factory.mktemp("dist")
    # fsdp-gates last: the gates saved from rank 0 are that run's.
    modes = [m for m in worker.MODES if m != "fsdp-gates"] + ["fsdp-gates"]
    torchrun(str(WORKER), "--out", str(out_dir / "params.pt"), "--save-gates", str(out_dir / "gates"),
             "--modes", *modes)
    return torch.load(out_dir / "params.pt"), out_dir / "gates"


@pytest.fixture(scope="module")
def batches(worker):
    return worker.global_batches()


@pytest.fixture(scope="module")
def single_process(worker, batches):
    """Reference runs in this process on the whole global batch: {gates_only: (init, final)}."""
    runs = {}
    for gates_only in (False, True):
        from vectorgate.patching import mark_only_gates_trainable

        model = worker.build_model()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        if gates_only:
            mark_only_gates_trainable(model, extra=())
        worker.train(model, batches, rank=0, world=1)
        runs[gates_only] = (init, model.state_dict())
    return runs


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "ddp-gates", "fsdp-gates", "ddp-compile"])
def test_distributed_matches_single_process(mode, distributed_run, single_process):
    results, _ = distributed_run
    gates_only = mode.endswith("-gates")
    init, expected = single_process[gates_only]
    got = results[mode]
    assert set(got) == set(expected)
    worst = max((got[k] - expected[k]).abs().max().item() for k in expected)
    print(f"{mode}: max |distributed - single process| = {worst:.2e}")  # shown with pytest -s
    for key, ref in expected.items():
        is_gate = ".gate1." in key or ".gate2." in key
        if gates_only and not is_gate:
            assert torch.equal(got[key], init[key]), f"{mode}: frozen {key} moved"
            continue
        assert not torch.equal(ref, init[key]), f"{key} did not train: the comparison would be vacuous"
        torch.testing.assert_close(got[key], ref, atol=ATOL, rtol=RTOL, msg=lambda m, k=key: f"{mode} {k}: {m}")


def test_ddp_and_fsdp_agree(distributed_run):
    results, _ = distributed_run
    for suffix in ("", "-gates"):
        ddp, fsdp = results["ddp" + suffix], results["fsdp" + suffix]
        for key in ddp:
            torch.testing.assert_close(fsdp[key], ddp[key], atol=1e-6, rtol=1e-6)


def test_save_gates_from_rank0_under_fsdp(distributed_run, worker):
    from vectorgate.patching import gates, load_gates

    results, gate_dir = distributed_run
    trained = results["fsdp-gates"]  # the mode run last, whose gates were saved
    model = load_gates(worker.build_base(), gate_dir)
    loaded = dict(model.state_dict())
    names = [name for name, _ in gates(model)]
    assert len(names) == 4
    for key, value in loaded.items():
        if key.startswith(tuple(f"{n}." for n in names)):
            assert torch.equal(value, trained[key]), key


def test_tolerance_would_catch_a_rank_training_without_gradient_sync(worker, batches, single_process):
    # The same 4 steps on one rank's half of each batch only: what a missing all-reduce gives.
    model = worker.build_model()
    worker.train(model, batches, rank=0, world=2)
    _, expected = single_process[False]
    gap = max((model.state_dict()[k] - v).abs().max().item() for k, v in expected.items())
    print(f"no gradient sync: max |one half - single process| = {gap:.2e}")  # shown with pytest -s
    assert gap > 100 * ATOL
