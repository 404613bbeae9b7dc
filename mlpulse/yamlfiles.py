"""YAML as mlpulse writes it (generated rules, tests, manifests, the native stack's configs): keys
in the order given, multi-line strings (PromQL expressions, scripts) as literal blocks so a file
reads as its source, and every repeated value spelled out (no anchors)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def dump(data: Any, *, width: int, **options: Any) -> str:
    """One document; ``width`` is where PyYAML folds long plain scalars."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=width, **options)


def dump_all(documents: Iterable[Any], *, width: int, **options: Any) -> str:
    """Several documents in one stream."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=width, **options)
