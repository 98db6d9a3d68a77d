"""MkDocs hooks: write the generated pages (docs/gen.py) before each build, and let
`mkdocs serve` rebuild when the code they come from changes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCES = ("coi/commands", "coi/config", "SECURITY.md")


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coi_docs_gen", HERE / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_pre_build(config: Any) -> None:
    _gen().generate(Path(config["docs_dir"]))


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    for source in SOURCES:
        server.watch(str(ROOT / source))
    return server
