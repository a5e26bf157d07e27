"""Griffe extension for the API reference: Sphinx roles in docstrings become Markdown.

The docstrings use Sphinx's cross-reference roles (``:func:`vectorgate.patch```,
``:class:`~vectorgate.gate.VectorGate```, ``:meth:`reset```), which mkdocstrings would print
literally. A fully qualified ``vectorgate.`` (or ``vectorgate_lab.``) target becomes an optional autorefs link: a link
where the reference documents the target, inline code where it does not (a private module,
an undocumented constant); any other target (a relative name, torch, ...) becomes inline
code. ``~`` shows the last component only.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+?)`")


def _replace(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    text = target.rsplit(".", 1)[-1] if short else target
    if target.startswith(("vectorgate.", "vectorgate_lab.")):
        return f'<autoref identifier="{target}" optional><code>{text}</code></autoref>'
    return f"`{text}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def _fix(self, obj: griffe.Object) -> None:
        if obj.docstring is not None and ":`" in obj.docstring.value:
            obj.docstring.value = _ROLE.sub(_replace, obj.docstring.value)

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        self._fix(obj)
