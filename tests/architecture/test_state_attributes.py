"""Architecture rules for state: what vectorgate does to a model lives in one typed object.

- No module but ``patching/state.py`` (the :class:`ModelState`) and ``patching/changes.py``
  (the generic, reversible :class:`SetAttribute`) writes around ``nn.Module.__setattr__``
  (``object.__setattr__``, ``__dict__[...] =``, ``del __dict__[...]``), writes an attribute by
  a string name that starts with an underscore (``setattr(m, "_x", ...)``) or reads one of its
  own (``getattr(m, "_vectorgate...")``): such state is invisible to readers, to the
  import-graph test and to ``unpatch``. (Reading other libraries' private flags, such as
  torch.compile's ``_orig_mod``, is not keeping state.)
- Every gated site of a patched model has a :class:`GateSite`, and a patch, a stack and a skip
  are one edit group each, popped top first.
"""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch
from torch import nn

import vectorgate as vg
from vectorgate.patching import GateSite, model_state, patch_state

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "vectorgate"
ALLOWED = {SRC / "patching" / "state.py", SRC / "patching" / "changes.py"}
_NAMED_WRITE = {"setattr", "delattr"}
_NAMED_READ = {"getattr", "hasattr"}


def _hidden_state_sites(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "object" \
                    and fn.attr in ("__setattr__", "__delattr__"):
                found.append(f"{where} object.{fn.attr}")
            if isinstance(fn, ast.Name) and fn.id in _NAMED_WRITE | _NAMED_READ and len(node.args) >= 2:
                name = node.args[1]
                prefix = "_" if fn.id in _NAMED_WRITE else "_vectorgate"
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value.startswith(prefix) \
                        and not name.value.startswith("__"):
                    found.append(f"{where} {fn.id}(..., {name.value!r})")
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and t.value.attr == "__dict__":
                found.append(f"{where} __dict__[...] write")
    return found


def test_no_hidden_state_attributes_outside_the_model_state():
    offenders = [hit for path in sorted(SRC.rglob("*.py")) if path not in ALLOWED
                 for hit in _hidden_state_sites(path)]
    assert not offenders, "state kept outside patching/state.py:\n" + "\n".join(offenders)


def test_the_rule_catches_what_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("object.__setattr__(m, '_x', 1)\nm.__dict__['_y'] = 2\nz = getattr(m, '_vectorgate_skip', None)\n"
                   "setattr(m, '_stacked', 1)\nok = getattr(m, '_orig_mod', None)\n")
    rel = SRC.parent / "bad.py"
    try:
        rel.write_text(bad.read_text())
        assert len(_hidden_state_sites(rel)) == 4
    finally:
        rel.unlink()


def _tiny_gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64)).eval()


def test_each_gated_site_has_one_gate_site_named_like_the_layer():
    model = vg.patch(_tiny_gpt2(), gate_source="normed")
    state = patch_state(model)
    assert sorted(state.gate_sites) == sorted(f"{n}.{s}" for n in state.layer_names for s in ("attention", "mlp"))
    gated = [g for _, g in vg.gates(model)]
    assert {id(site.gate) for site in state.gate_sites.values()} == {id(g) for g in gated}
    assert all(isinstance(s, GateSite) and s.reads == "normed" for s in state.gate_sites.values())


def test_patch_stack_and_skip_are_edit_groups_popped_top_first():
    model = vg.patch(_tiny_gpt2(), gate_source="normed")
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        before = model(ids).logits
    vg.patching.stack_gate_projections(model)
    assert [g.kind for g in model_state(model).groups] == ["patch", "stack"]
    with pytest.raises(ValueError, match="unstacked"):
        vg.skip.enable_skipping(model)
    assert [g.kind for g in model_state(model).groups] == ["patch", "stack"]  # all or nothing
    sites = patch_state(model).gate_sites.values()
    assert all(s.link is not None for s in sites)
    vg.unpatch(model)  # pops the stack group, then the patch group
    assert model_state(model) is None and not vg.patching.is_patched(model)
    assert all(s.link is None for s in sites)

    vg.patch(model)
    controller = vg.skip.enable_skipping(model)
    assert [g.kind for g in model_state(model).groups] == ["patch", "skip"]
    assert vg.skip.skip_controller(model) is controller
    with pytest.raises(ValueError, match="disable_skipping"):
        vg.patching.stack_gate_projections(model)
    vg.skip.disable_skipping(model)
    assert [g.kind for g in model_state(model).groups] == ["patch"]
    assert all(s.skip is None for s in patch_state(model).gate_sites.values())
    vg.unpatch(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
