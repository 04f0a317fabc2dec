"""YAML as the project reads it: PyYAML's safe loader, but a key given twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word, so a second `network:` section silently
dropped the first, and a second `items:` in `regions.yaml` replaced the whole vocabulary (every
region code of the CRM then read as unknown). Every YAML file the project reads — the dictionaries,
the training config, the gate — goes through `load`, and a repeated key is reported like any other
YAML problem (`needs_rec.errors.yaml_problem`: line, column and what is wrong). Keys that a merge
(`<<: *base`) brings in may still be overridden: only the keys written in the mapping itself count.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping which repeats one of its own keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # merges may be overridden; an unhashable key is refused by the base class
            key = self.construct_object(key_node)
            if key in first_line:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first given on line {first_line[key] + 1}); give each key once",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """The data of one YAML document, as `yaml.safe_load` gives it; ConstructorError for a repeated key."""
    return yaml.load(text, Loader=StrictLoader)
