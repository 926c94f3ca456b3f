"""One exception type for every mistake a user can fix; the CLI prints it without a traceback."""

from __future__ import annotations

import importlib.util


class MvkitError(Exception):
    """A user-facing error whose message says what went wrong and what to do about it."""


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here."""
    return [name for name in modules if importlib.util.find_spec(name.split(".")[0]) is None
            or importlib.util.find_spec(name) is None]


# Extras that cannot share an environment with the others: said where the install is suggested
INSTALL_APART = {"litert": "in an environment of its own (litert-torch pins an older typing-extensions than "
                           "coremltools needs)"}


def require_extra(extra: str | None, modules: tuple[str, ...] | list[str], purpose: str) -> None:
    """Refuse, naming the pip extra, when a module that `purpose` needs is not installed."""
    missing = missing_modules(modules)
    if missing:
        install = f"pip install 'mvkit[{extra}]'" if extra else f"pip install {' '.join(missing)}"
        if extra in INSTALL_APART:
            install += f", {INSTALL_APART[extra]}"
        raise MvkitError(f"{purpose} needs {', '.join(missing)}, which is not installed: {install}")
