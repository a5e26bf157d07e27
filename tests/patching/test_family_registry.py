"""Integrations register by a call or an entry point; a missing library is skipped by looking
for the library, never by reading an error message, and a broken integration is an error."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest
import torch
from torch import nn

from vectorgate.patching import families, gate_config, gates, patch, unpatch


@pytest.fixture
def clean_registry():
    families.load_integrations()  # the built-in families are registered before the snapshot
    saved = (dict(families.INTEGRATIONS), set(families._loaded), dict(families.FAMILIES))
    yield
    families.INTEGRATIONS.clear()
    families.INTEGRATIONS.update(saved[0])
    families._loaded.clear()
    families._loaded.update(saved[1])
    families.FAMILIES.clear()
    families.FAMILIES.update(saved[2])


def test_an_integration_whose_library_is_not_installed_is_skipped(clean_registry):
    families.register_integration("vectorgate_tests_never_imported", requires="vectorgate_tests_absent_library")
    families.load_integrations()  # does not try to import the module
    assert "vectorgate_tests_never_imported" not in families._loaded


def test_a_broken_integration_is_an_error_not_a_missing_option(clean_registry):
    # The library is there (json), the integration module is not: a bug, raised as such.
    families.register_integration("vectorgate_tests_no_such_module", requires="json")
    with pytest.raises(ModuleNotFoundError, match="vectorgate_tests_no_such_module"):
        families.load_integrations()


TOY_FAMILY = textwrap.dedent('''
    from torch import nn
    from vectorgate.patching import AddModule, Family, GateBranchOutput, register_family

    @register_family
    class ToyFamily(Family):
        name = "toy_entry_point"
        description = "ToyBlock stacks (a test plugin)"
        sites = ("mlp",)

        def find_layers(self, model):
            return self.layers_of_class(model, ["ToyBlock"])

        def site_dim(self, layer, site):
            return layer.mlp.out_features

        def changes(self, layer, gates):
            return [AddModule(layer, "residual_gates", nn.ModuleDict(gates)),
                    GateBranchOutput(layer.mlp, gates["mlp"], capture=None)]
''')


class ToyBlock(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.mlp = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def test_a_family_from_an_entry_point_patches_its_models(clean_registry, tmp_path, monkeypatch):
    (tmp_path / "vectorgate_tests_toy_plugin.py").write_text(TOY_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint(name="toy", value="vectorgate_tests_toy_plugin",
                                          group=families.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        return [entry] if kwargs.get("group") == families.ENTRY_POINT_GROUP else real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    torch.manual_seed(0)
    model = nn.Sequential(ToyBlock(), ToyBlock())
    x = torch.randn(3, 8)
    before = model(x)
    patch(model)
    assert gate_config(model).family == "toy_entry_point"
    assert len(list(gates(model))) == 2
    assert torch.equal(model(x), before)  # identity at init, through the plugin's hooks
    unpatch(model)
    sys.modules.pop("vectorgate_tests_toy_plugin", None)
