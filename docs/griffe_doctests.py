"""Griffe extension for the API reference: doctest lines written flush under `Example:` become code blocks.

The package's docstrings write their examples as `>>>` lines under `Example:` (Keras' style), either flush or
indented; griffe reads `Example:` as an admonition, whose text Markdown would render as nested quotes. Each run
of `>>>` lines (with the output lines that follow, up to a blank line) is fenced as Python, so the page shows
code and nothing in it is parsed as a Markdown link.
"""

import griffe


def fence_doctests(text):
    """`text` with every run of `>>>` lines and their output wrapped in a ```python fence at their indentation."""
    out, block, indent = [], [], ""
    for line in text.splitlines() + [""]:
        if block and line.strip():
            block.append(line)
            continue
        if block:
            # a blank line before a fence that follows text at its own indentation (not under a section title)
            previous = out[-1] if out else ""
            if previous.strip() and previous.startswith(indent) and not previous[len(indent):].startswith(" "):
                out.append("")
            out += [f"{indent}```python", *block, f"{indent}```"]
            block = []
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = [line]
            continue
        out.append(line)
    return "\n".join(out[:-1])


class FenceDoctests(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
