"""From images and conversations to model inputs.

- :mod:`vlmkit.data.processor`: images to normalised LR/HR pixel tensors;
- :mod:`vlmkit.data.views`: Mini-Gemini's HD views (how many per image, and the cut);
- :mod:`vlmkit.data.conversation`: chat templates, token ids with image placeholders, labels;
- :mod:`vlmkit.data.llava`: LLaVA-format datasets; :mod:`vlmkit.data.collate`: batching.
"""
