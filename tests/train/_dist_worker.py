"""Run under torchrun by test_distributed.py: train the tiny model, save each rank's weights and losses.

Arguments: DATA_JSON OUTPUT_DIR STRATEGY.
"""

import sys
from pathlib import Path

import torch

import vlmkit
from vlmkit.data.llava import LlavaDataset
from vlmkit.train.trainer import TrainConfig, Trainer

STEPS, PER_DEVICE, GLOBAL = 3, 2, 4


def main() -> None:
    data, out, strategy = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    model = vlmkit.build("mgm-tiny")
    config = TrainConfig.from_preset(
        model.config, "finetune", max_steps=STEPS, per_device_batch_size=PER_DEVICE,
        global_batch_size=GLOBAL, learning_rate=1e-3, lr_schedule="constant", progress=False,
        output_dir=str(out), save_steps=STEPS, distributed=strategy)
    trainer = Trainer(model, LlavaDataset(data, None, model), config)
    history = trainer.train()
    state = trainer.full_state_dict()  # under FSDP: gathered on rank 0, empty elsewhere
    torch.save({"losses": [h["loss"] for h in history], "tokens": [h["tokens"] for h in history],
                "state": {k: v.detach().clone() for k, v in state.items()}},
               out / f"rank{trainer.info.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
