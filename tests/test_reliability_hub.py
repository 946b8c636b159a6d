"""Hub reliability: no file we write or push ever holds the token; a bad repo id fails before training."""

from __future__ import annotations

import pytest

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf import HubPushError


def _token_holders(token: str, files: dict[str, bytes]) -> list[str]:
    return [name for name, data in files.items() if token.encode() in data]


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints", "end"])
def test_no_pushed_or_written_file_holds_the_token(fake_hub, tmp_path, strategy):
    output = tmp_path / "student"
    args = ContrastiveDistillationConfig(
        output_dir=str(output), max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=16,
        nce_k=16, report_to="none", disable_tqdm=True, push_to_hub=True, hub_model_id="tester/secret-student",
        hub_strategy=strategy, hub_token=fake_hub.token,
    )
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 64))
    trainer.train()
    if strategy == "end":  # the others pushed every checkpoint during training
        trainer.push_to_hub()
    assert trainer.args.hub_token == fake_hub.token  # the live config keeps it: only what is written loses it

    history = fake_hub.commit_log("tester/secret-student")
    pushed = {f"{commit['sha'][:8]}:{path}": data for commit in history
              for path, data in fake_hub.repo_files("tester/secret-student", commit["sha"]).items()}
    assert any(path.endswith("training_args.bin") for path in pushed)
    assert _token_holders(fake_hub.token, pushed) == []
    local = {str(p): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert any(path.endswith("training_args.bin") for path in local)
    assert _token_holders(fake_hub.token, local) == []


@pytest.mark.parametrize("overrides, named", [
    (dict(hub_model_id="tester/not a repo"), "hub_model_id 'tester/not a repo'"),
    (dict(hub_model_id="a/b/c"), "hub_model_id 'a/b/c'"),
    (dict(push_to_hub=True, output_dir="runs/my run!"), "'my run!' (the name of output_dir"),
])
def test_an_invalid_repo_id_is_refused_when_the_config_is_built(overrides, named):
    settings = {"output_dir": "out", "report_to": "none", **overrides}
    with pytest.raises(ValueError, match="not a valid Hub repo id") as raised:
        ContrastiveDistillationConfig(**settings)
    assert named in str(raised.value)


def test_push_to_hub_saves_the_student_before_any_hub_call(fake_hub, tmp_path):
    output = tmp_path / "run one!"  # push_to_hub=False: the repo name comes from output_dir only at push time
    args = ContrastiveDistillationConfig(output_dir=str(output), max_steps=2, per_device_train_batch_size=16, nce_k=16,
                                         report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 32))
    trainer.train()
    with pytest.raises(HubPushError, match="'run one!'") as raised:
        trainer.push_to_hub()
    assert "saved in" in str(raised.value)
    assert {"model.safetensors", "distillation_config.json", "README.md"} <= {p.name for p in output.iterdir()}
    assert not fake_hub.requests_to("POST")  # nothing reached the Hub


def test_an_unreachable_hub_endpoint_is_one_error_naming_it_before_training(monkeypatch, tmp_path):
    import socket

    from fake_hub import patch_hf_clients
    from cktf_hf.hub import HubRepoError

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    patch_hf_clients(monkeypatch, endpoint, "hf_fake_token", tmp_path / "cache")
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path / "out"), push_to_hub=True, hub_model_id="me/student",
                                         max_steps=1, per_device_train_batch_size=16, report_to="none")
    with pytest.raises(HubRepoError) as raised:
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                       train_dataset=tiny.digits("train", 32))
    message = str(raised.value)
    assert "\n" not in message and endpoint in message and "'me/student'" in message
    assert "Nothing was trained" in message and raised.value.__cause__ is None
