"""fdjpeg: compression-based defenses against adversarial examples, with a fast native core.

The operations take numpy arrays (uint8 HWC/NHWC, or float in [0, 1]) and torch tensors
(uint8 or float CHW/NCHW, CPU or CUDA) and return the same kind of object.
"""

from . import tables
from .ops import feature_distill, isa, jpeg, quantize
from .tables import QuantTable
from . import defenses

# The one place the version is written: pyproject.toml reads it from here (scikit-build-core regex provider).
__version__ = "0.1.0"

__all__ = ["defenses", "feature_distill", "jpeg", "quantize", "isa", "tables", "QuantTable", "__version__"]
