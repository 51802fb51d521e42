"""Any decoded image as 8-bit RGB: the one conversion every reader of image files uses (datasets, predict, draw).

PIL's ``convert("RGB")`` clips a 16-bit grey image to 255, which turns it into a picture that is
almost all white. :func:`rgb8` scales instead:

* 16-bit grey (modes ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` with every value in
  0-65535, as PIL opens some 16-bit files): ``v8 = round(v * 255 / 65535)``, the value's share
  of the 16-bit range kept;
* 32-bit float grey (mode ``F``) with every value in [0, 1]: ``v8 = round(v * 255)``;
* other modes (``1``, ``L``, ``P``, ``LA``, ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``; 16-bit
  colour PNGs, which PIL already reads as 8-bit ``RGB``/``RGBA``): ``convert("RGB")``.

An ``I`` image with values outside 0-65535 or an ``F`` image outside [0, 1] has no one 8-bit
reading and is a ``ValueError`` saying so.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_MAX_16_BIT = 65535


def rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, more than 8 bits per value scaled to 8 (see the module docstring)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > _MAX_16_BIT):
            raise ValueError(f"a {image.mode} image with values {values.min():g}..{values.max():g}, outside the "
                             f"16-bit range 0..{_MAX_16_BIT}, has no 8-bit reading")
        scaled = values * (255 / _MAX_16_BIT)
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise ValueError(f"a floating-point ({image.mode}) image needs values in [0, 1], got "
                             f"{np.nanmin(values):g}..{np.nanmax(values):g}")
        scaled = values * 255
    else:
        return image.convert("RGB")
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L").convert("RGB")
