"""`vlmkit train`: a training file or a model plus --data, a progress bar, metrics log, resume."""

import json

import yaml
from click.testing import CliRunner

import vlmkit
from vlmkit.cli import cli


def _train_file(tmp_path, tiny_data, **train):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "model": "mgm-tiny", "stage": "pretrain", "data": str(tiny_data),
        "train": {"per_device_batch_size": 2, "global_batch_size": 4, "warmup_ratio": 0.0, **train}}))
    return path


def test_train_file_writes_final_and_resumes(tiny_data, tmp_path):
    config, out = _train_file(tmp_path, tiny_data), tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(config), "--max-steps", "2", "--output-dir", str(out),
                                 "--save-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "loss=" in result.output and "samples_s=" in result.output  # the progress bar
    assert "step 2: loss" in result.output
    model = vlmkit.VisionLanguageModel.from_pretrained(out / "final")
    assert model.config.name == "mgm-tiny"
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert set(log[0]) >= {"loss", "lr", "samples_per_s", "skipped"}
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["config"]["stage"] == "pretrain" and state["config"]["chat_template"] == "plain"
    result = runner.invoke(cli, ["train", str(config), "--max-steps", "3", "--output-dir", str(out),
                                 "--save-steps", "1", "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    # Stage 2 starts from stage 1's saved model.
    result = runner.invoke(cli, ["train", str(out / "final"), "--stage", "finetune", "--data",
                                 str(tiny_data), "--max-steps", "1", "--output-dir",
                                 str(tmp_path / "stage2"), "--no-progress"])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()[0])
    assert state["step"] == 1
    vlmkit.VisionLanguageModel.from_pretrained(tmp_path / "stage2" / "final")


def test_model_with_data_flag_and_errors(tiny_data, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "mgm-tiny", "--data", str(tiny_data), "--max-steps", "1",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", "mgm-tiny"])
    assert result.exit_code == 2 and "no training data" in result.output
    result = runner.invoke(cli, ["train", "mgm-tiny", "--data", str(tmp_path / "none.json")])
    assert result.exit_code == 1 and "none.json" in result.output and "does not exist" in result.output
    config = _train_file(tmp_path, tiny_data, learning_rte=0.1)
    result = runner.invoke(cli, ["train", str(config), "--max-steps", "1"])
    assert result.exit_code == 1 and "learning_rte" in result.output
    result = runner.invoke(cli, ["train", str(config), "--resume"])
    assert result.exit_code == 2 and "--resume needs --output-dir" in result.output
