"""Package exports loaded on first use (PEP 562), so that importing one light module of a
package (its options, say) does not import torch or Ray for the whole package."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose name ``n`` comes from module ``exports[n]``.

    >>> getattr_, dir_ = lazy_exports("nic_ray", {"dihedral": "nic_ray.dihedral"})
    >>> getattr_("dihedral").__name__
    'dihedral'
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
