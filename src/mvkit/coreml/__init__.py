"""Core ML packages on any OS: read a .mlpackage's structure (package.py) and run its ML program with mvkit's numpy
interpreter (interpreter.py) where macOS Core ML is not there. Kept free of torch and mvkit's exporters, so reading a
package loads coremltools and nothing of mvkit's training side."""


def quiet_coremltools() -> None:
    """coremltools logs at import that this torch is untested and that its macOS-only library is missing."""
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)
