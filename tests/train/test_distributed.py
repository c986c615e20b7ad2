"""Two processes on the CPU (gloo) under torchrun: replicas stay identical and the loss equals
one process's with the same global batch; the result loads with from_pretrained."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlmkit
from vlmkit.data.llava import LlavaDataset
from vlmkit.train.trainer import TrainConfig, Trainer

from . import _dist_worker as worker
from .conftest import tiny_model


def _torchrun(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    src = str(Path(vlmkit.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *args]
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _one_process_config(model, steps, **kw):
    """One process, the workers' global batch (4 per device, no accumulation)."""
    return TrainConfig.from_preset(
        model.config, "finetune", max_steps=steps, per_device_batch_size=worker.GLOBAL,
        global_batch_size=worker.GLOBAL, learning_rate=1e-3, lr_schedule="constant",
        progress=False, **kw)


@pytest.fixture(scope="module")
def one_process(tiny_data):
    """The workers' run plus one step, on one process: (metrics, weights after the workers'
    steps, weights after the extra step)."""
    model = tiny_model()
    data = LlavaDataset(tiny_data, None, model)
    history = Trainer(model, data, _one_process_config(model, worker.STEPS)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model = tiny_model()
    longer = Trainer(model, data, _one_process_config(model, worker.STEPS + 1)).train()
    assert [h["loss"] for h in longer[:-1]] == [h["loss"] for h in history]
    return longer, state, model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(strategy, one_process, tiny_data, tmp_path):
    out = tmp_path / "out"
    _torchrun([worker.__file__, str(tiny_data), str(out), strategy], tmp_path)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # both report the global loss
    if strategy == "ddp":  # replicas are identical after the steps
        for k, v in ranks[0]["state"].items():
            assert torch.equal(v, ranks[1]["state"][k]), k
    else:  # FSDP gathers the full weights on rank 0 only
        assert ranks[1]["state"] == {}
    history, state, state_after = one_process
    assert [h["tokens"] for h in history[:-1]] == ranks[0]["tokens"]
    assert ranks[0]["losses"] == pytest.approx([h["loss"] for h in history[:-1]], rel=1e-5)
    assert ranks[0]["state"].keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(ranks[0]["state"][k], v, rtol=1e-4, atol=1e-5)
    loaded = vlmkit.VisionLanguageModel.from_pretrained(out / "final")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ranks[0]["state"][k]), k
    assert (out / f"checkpoint-{worker.STEPS}" / "rng_state_1.pt").is_file()
    # The 2-process checkpoint resumes on 1 process and continues like the 1-process run.
    model = tiny_model(seed=5)
    resumed = Trainer(model, LlavaDataset(tiny_data, None, model),
                      _one_process_config(model, worker.STEPS + 1)).train(out / f"checkpoint-{worker.STEPS}")
    assert [h["step"] for h in resumed] == [worker.STEPS + 1]
    assert resumed[0]["loss"] == pytest.approx(history[-1]["loss"], rel=1e-5)
    for k, v in state_after.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-4, atol=1e-5)
