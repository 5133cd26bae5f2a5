"""tinyforge: from a TensorFlow model to a checked, right-sized TFLM firmware project.

The public API is the handful of library functions behind the commands; the command line
(`tinyforge.cli`) is a thin layer over them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
