"""Core ML packages on any OS: read a .mlpackage's structure (package.py) and run its ML program with mvkit's numpy
interpreter (interpreter.py) where macOS Core ML is not there. Kept free of torch and mvkit's exporters, so reading a
package loads coremltools' protobuf classes and nothing of mvkit's training side."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

from mvkit.errors import MvkitError

_PROTO_PACKAGE = "mvkit_coremltools_proto"  # coremltools/proto under a name of its own: see proto()


def quiet_coremltools() -> None:
    """coremltools logs at import that this torch is untested and that its macOS-only library is missing."""
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)


def proto(name: str) -> types.ModuleType:
    """coremltools' generated protobuf module `name` ("Model_pb2", "MIL_pb2"): the Core ML spec's own classes.

    Loaded from coremltools' proto folder without running `coremltools/__init__.py`, which imports torch,
    torchvision and executorch to find its converters (about 6 s and 800 MB before a package is read). Reading a
    package needs only these classes. They are registered in protobuf's one descriptor pool, so a later
    `import coremltools` in the same process gets the very same message classes."""
    if "coremltools.proto" in sys.modules:  # coremltools is imported already: nothing to save
        return importlib.import_module(f"coremltools.proto.{name}")
    if _PROTO_PACKAGE not in sys.modules:
        found = importlib.util.find_spec("coremltools")  # finds the package without importing it
        if found is None or not found.submodule_search_locations:
            raise MvkitError("reading Core ML packages needs its extra: pip install 'mvkit[coreml]'")
        package = types.ModuleType(_PROTO_PACKAGE)
        package.__path__ = [os.path.join(found.submodule_search_locations[0], "proto")]  # the pb2 files import each other relatively
        sys.modules[_PROTO_PACKAGE] = package
    return importlib.import_module(f"{_PROTO_PACKAGE}.{name}")
