"""fedge: federated learning at the radio edge.

This package holds only what every part shares: the version, the base exception and
the ``fedge`` command. It imports nothing heavy, so ``fedge agent`` stays light.
"""

from fedge._errors import FedgeError, MissingExtraError

__version__ = "0.1.0"

__all__ = ["FedgeError", "MissingExtraError", "__version__"]
