"""Training: MGM's two stages, LoRA via peft, exact-resume checkpoints, DDP/FSDP under torchrun.

``TrainConfig`` and ``Trainer`` (:mod:`.trainer`), ``apply_stage`` (:mod:`.stages`), LoRA helpers
(:mod:`.lora`). Data lives in :mod:`vlmkit.data.llava` and :mod:`vlmkit.data.collate`.
"""
