"""Families of Hugging Face models that :func:`vectorgate.patch` supports; importing registers them.

One module per group of models that share a residual layout. To add a family, write a
:class:`vectorgate.patching.Family` subclass decorated with ``@register_family`` in a new
module here and import it below.
"""

from vectorgate.integrations.transformers.families import distilbert, post_ln, pre_norm

__all__ = ["distilbert", "post_ln", "pre_norm"]
