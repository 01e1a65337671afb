"""Strict YAML reading for every file the project reads (sweep files, flat parameter files, overrides).

PyYAML keeps the last of two equal keys without a word, so a run or a parameter written twice would be
silently dropped; here it is an error naming the key and both lines. Syntax errors become one line,
``file:line:column: what is wrong``, instead of a multi-line traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml


class YAMLFileError(ValueError):
    """A YAML file that cannot be read: its message is ``file:line:column: problem`` (one line)."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that refuses a mapping holding the same key twice."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may override keys: that is its job
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    again = key in first_line
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if again:
                    first, line = first_line[key] + 1, key_node.start_mark.line + 1
                    where = f"lines {first} and {line}" if first != line else f"twice in line {line}"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} ({where}); keep one of them", key_node.start_mark)
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path):
    """The content of the YAML file ``path`` (plain data); ``YAMLFileError`` on a syntax error or duplicate key."""
    path = Path(path)
    try:
        with path.open("rb") as stream:  # bytes: PyYAML detects the encoding and reports bad bytes itself
            return yaml.load(stream, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        context = f" ({err.context} at line {err.context_mark.line + 1})" if err.context and err.context_mark else ""
        raise YAMLFileError(f"{where}: {err.problem}{context}") from None
    except yaml.YAMLError as err:  # e.g. bytes that are not text: no line to name
        raise YAMLFileError(f"{path}: not a readable YAML file: {' '.join(str(err).split())}") from None
