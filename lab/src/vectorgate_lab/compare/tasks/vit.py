"""A small ViT (timm) trained from scratch on real MNIST digits; metric: validation accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vectorgate_lab.assets import load_mnist, split_indices
from vectorgate_lab.compare.spec import VariantSpec
from vectorgate_lab.compare.task import ClassificationTask
from vectorgate_lab.compare.tasks._patching import patch_variant

# MNIST's pixel mean and std, the usual normalisation.
_MEAN, _STD = 0.1307, 0.3081


@dataclass
class ViTMnistTask(ClassificationTask):
    """timm ``VisionTransformer`` (28x28 input, 7x7 patches -> 16 tokens) on 4,000/1,000 MNIST digits.

    Both residuals of every block go through the variant (``vectorgate.patch``).
    """

    name: str = "vit_mnist"
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    augment_shift: int = 0
    """Light augmentation, the same for every arm: each training image is shifted by up to
    this many pixels in each direction (zero fill), drawn from the run's data generator."""

    def configure(self, *, quick: bool = False, scale: float = 1.0) -> None:
        super().configure(quick=quick, scale=scale)
        if quick:
            self.embed_dim, self.depth, self.num_heads = 16, 1, 2

    def load(self) -> None:
        x, y = load_mnist()
        x = (x - _MEAN) / _STD
        train, val = split_indices(len(y), (0.8, 0.2), seed=0)
        self.x_train, self.y_train, self.x_val, self.y_val = x[train], y[train], x[val], y[val]

    n_calibration: int = 500

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = super().batch(step, generator)
        if self.augment_shift:
            x = _random_shift(x, self.augment_shift, generator)
        return x, y

    def calibration_batches(self) -> list[Tensor]:
        """The first ``n_calibration`` training images (MNIST here has no third split; the
        1,000 scored images stay unseen)."""
        x = self.x_train[: self.n_calibration].to(self.device)
        return list(x.split(self.eval_batch_size))

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        try:
            from timm.models.vision_transformer import VisionTransformer
        except ImportError as err:
            raise ImportError("the vit_mnist task needs timm: `pip install vectorgate[timm]`") from err
        import vectorgate.integrations.timm  # noqa: F401  (registers the timm family for patch())

        model = VisionTransformer(
            img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=self.embed_dim,
            depth=self.depth, num_heads=self.num_heads, mlp_ratio=2.0,
        )
        return patch_variant(model, spec, seed, dim=self.embed_dim, stream_layers=_timm_sites)


def _random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image of ``x`` ``(batch, 1, 28, 28)`` by its own (dy, dx) in
    ``[-max_shift, max_shift]``, filling with the background (the normalised zero pixel)."""
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator)
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=-_MEAN / _STD)
    out = torch.empty_like(x)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        out[i] = padded[i, :, max_shift - dy : max_shift - dy + h, max_shift - dx : max_shift - dx + w]
    return out


def _timm_sites(model: nn.Module) -> list:
    """timm ViT's residual sites for stream-expanding variants: ``(block, [(norm1, ls1), (norm2, ls2)])``."""
    return [(b, [(b.norm1, b.ls1), (b.norm2, b.ls2)]) for b in model.blocks]
