"""Projectors (kind ``projector``): visual tokens ``(B, T, C)`` to the LLM's width ``(B, T, D)``.

- :mod:`vlmkit.projectors.mlp`: ``linear``, ``mlp2x_gelu`` (LLaVA-1.5 / Mini-Gemini) and
  ``mlp3x_gelu``.
"""
