"""Integrations with other libraries; each submodule imports its library lazily.

- :mod:`vectorgate.integrations.transformers`: Hugging Face models (``GatedBertOutput``,
  the families behind :func:`vectorgate.patch`, ``save_pretrained``/``from_pretrained_patched``).
- :mod:`vectorgate.integrations.timm`: timm Vision Transformers.
- :mod:`vectorgate.integrations.accelerate`: :func:`~vectorgate.integrations.accelerate.gate_optimizer`,
  the gates' optimizer groups for a hand-written (``accelerate``) training loop.
"""
