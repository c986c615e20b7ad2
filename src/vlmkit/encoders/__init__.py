"""Vision encoders: the built-in families (one module each) and the bases a plugin subclasses.

- :class:`vlmkit.interfaces.VisionEncoder`: any encoder (``describe``, ``finish_build`` with the
  ``frozen`` switch, ``check_pixels``);
- :class:`HFViTTower`: a Hugging Face vision transformer returning one hidden layer as tokens
  (CLIP and SigLIP here; DINOv2 in the ``vlmkit-encoders`` plugin).
"""

from vlmkit.encoders._hf import HFViTTower

__all__ = ["HFViTTower"]
