"""A module imported on first attribute access: keeps pandas out of `fleetsim roofline` and the config
schema (`import sim.config` does not need it; reading or generating a trace does)."""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update(module.__dict__)  # later lookups are plain attribute hits
        return getattr(module, attr)
