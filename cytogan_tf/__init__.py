"""cytogan-tf: generative models of single cells on microscopy plates.

Importing the package is cheap (no TensorFlow); each submodule imports what it needs.
"""

__version__ = "0.1.0"
