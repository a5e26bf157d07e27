"""Hugging Face Transformers integration.

- :class:`GatedBertOutput`, :class:`GatedBertSelfOutput`: gated drop-ins for BERT's
  output modules (``from_module`` keeps the pretrained weights).
- Families for :func:`vectorgate.patch`: BERT/RoBERTa/ELECTRA/XLM-R/CamemBERT, DistilBERT,
  GPT-2, Llama/Mistral/Qwen2/Qwen3/Gemma, ViT (see :mod:`.families`), and any other layer
  built like one of them (recognised by module structure, with cross-attention sites where
  a decoder has them).
- :func:`save_pretrained`, :func:`from_pretrained_patched`: round trips of patched models.
- :class:`GateTrainer` (:mod:`.trainer`, imported on first use): ``transformers.Trainer``
  with the gates on their own learning rate and without decay on their vectors.
"""

from vectorgate._optional import require

require("transformers", extra="transformers", needed_by="vectorgate.integrations.transformers")

from vectorgate.integrations.transformers import families  # noqa: E402
from vectorgate.integrations.transformers.hub import from_pretrained_patched, save_pretrained  # noqa: E402
from vectorgate.integrations.transformers.modules import GatedBertOutput, GatedBertSelfOutput  # noqa: E402

__all__ = [
    "GateTrainer",
    "GatedBertOutput",
    "GatedBertSelfOutput",
    "families",
    "from_pretrained_patched",
    "save_pretrained",
]


def __getattr__(name: str):
    """``GateTrainer`` lazily: importing ``transformers.Trainer`` is slow and not needed to patch."""
    if name == "GateTrainer":
        from vectorgate.integrations.transformers.trainer import GateTrainer

        return GateTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
