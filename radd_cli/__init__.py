"""radd: reparameterized absorbing discrete diffusion (RADD) language models.

The library behind the `radd` command. Importing it has no side effects.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
