"""Miners (kind ``miner``): how the LR features, and the HR features when there are any, become
the visual tokens of one view, ``(B, T, C)``.

- :mod:`vlmkit.miners.patch_info_miner`: Mini-Gemini's ``patch_info_mining`` (LR tokens attend
  over their HR windows; its op is :func:`vlmkit.ops.patch_info_mining`);
- :mod:`vlmkit.miners.simple`: ``identity`` (LLaVA), ``channel_concat``, ``sequence_concat``;
- :mod:`vlmkit.miners._layout`: token/map layout conversions the miners share.
"""
