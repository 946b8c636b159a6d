"""examples/distill_vit.py end to end on tiny settings: plain python, `accelerate launch` and `torchrun`; its --help,
recipe files, the conventions of transformers' run_image_classification.py, metrics files, logs and TensorBoard."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification, ViTImageProcessor

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "stripe"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A local image folder (3 classes, grayscale and RGB PNGs) and a tiny ResNet teacher folder with its processor."""
    root = tmp_path_factory.mktemp("examples")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for i in range(12):
            pixels = (rng.random((20, 20)) * 80 + label * 80).astype("uint8")
            image = Image.fromarray(pixels) if i % 2 else Image.fromarray(pixels).convert("RGB")
            image.save(root / "images" / name / f"{i}.png")
    torch.manual_seed(0)
    labels = dict(num_labels=3, id2label=dict(enumerate(CLASSES)), label2id={n: i for i, n in enumerate(CLASSES)})
    teacher = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1],
                                                        **labels))
    teacher.save_pretrained(root / "teacher")
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root / "teacher")
    return root


SCRIPT = str(ROOT / "examples" / "distill_vit.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def script_arguments(workspace, output: Path, *extra: str, use_cpu: bool = True) -> list[str]:
    """The script's tiny settings on the workspace's teacher and images, then ``extra`` (later flags win)."""
    return [
        "--teacher", str(workspace / "teacher"),
        "--dataset", str(workspace / "images"), "--eval_split", "train", "--student", "cktf-vit-nano",
        "--output_dir", str(output), "--max_steps", "3", "--per_device_train_batch_size", "8", "--nce_k", "8",
        "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true", "--card_latency", "false",
        "--teacher_check", "false",  # an untrained teacher
        *(["--use_cpu"] if use_cpu else []), *extra,
    ]


def run_script(workspace, launcher: list[str], output: Path, *extra: str, use_cpu: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
    command = launcher + [SCRIPT, *script_arguments(workspace, output, *extra, use_cpu=use_cpu)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**ENV, **(env or {})},
                          cwd=str(workspace))


def run_bare(workspace, *arguments: str) -> subprocess.CompletedProcess:
    """The script with only ``arguments`` (no test defaults).

    ``COLUMNS`` is wide so that ``--help`` never wraps a default: argparse breaks long values at hyphens, and where the
    clone lives decides how long the default teacher's path is.
    """
    return subprocess.run([sys.executable, SCRIPT, *arguments], capture_output=True, text=True, timeout=300,
                          env={**ENV, "COLUMNS": "10000"}, cwd=str(workspace))


def run_example(workspace, launcher: list[str], output: Path, *extra: str) -> str:
    result = run_script(workspace, launcher, output, *extra)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.parametrize("launcher", ["python", pytest.param("accelerate", marks=pytest.mark.slow)])
def test_distill_vit_end_to_end(workspace, tmp_path, launcher):
    prefix = [sys.executable] if launcher == "python" else [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    output = tmp_path / "student"
    stdout = run_example(workspace, prefix, output, "--card_latency", "true")
    assert "accuracy (top-1)" in stdout and "parameters" in stdout and "CPU latency, batch 32" in stdout
    # the start-up summary: sizes (the projectors apart from the student) and the layer-pairing table
    assert "student     cktf-vit-nano: ViTForImageClassification" in stdout and "projectors" in stdout
    assert "layer pairing:" in stdout and "final  classifier input" in stdout
    assert "objective   preset cktf: γ=1 CE" in stdout and "in-batch negatives" in stdout  # as resolved and built
    # what run_image_classification.py writes after training
    results = json.loads((output / "all_results.json").read_text())
    assert results["train_samples"] == 36 and results["eval_samples"] == 36
    assert {"train_loss", "eval_accuracy", "teacher_accuracy"} <= results.keys()
    assert json.loads((output / "train_results.json").read_text())["train_loss"] == results["train_loss"]
    assert json.loads((output / "eval_results.json").read_text())["eval_accuracy"] == results["eval_accuracy"]
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 3
    student = AutoModelForImageClassification.from_pretrained(output)
    assert type(student).__name__ == "ViTForImageClassification" and student.config.id2label[1] == "square"
    config = json.loads((output / "distillation_config.json").read_text())
    assert config["teacher"] == "teacher" and config["layer_pairing"][-1]["pair"] == "final"
    # The script sets no objective field: the file leaves negatives to the preset (null) and records what ran.
    assert config["negatives"] is None and config["resolved_objective"]["negatives"] == "in_batch"
    card = (output / "README.md").read_text()
    assert "cktf" in card and "Compression" in card


@pytest.mark.slow
def test_distill_vit_resumes_and_refuses_to_overwrite(workspace, tmp_path):
    python, output = [sys.executable], tmp_path / "student"
    output.mkdir()
    (output / "notes.txt").write_text("someone else's file")
    refused = run_script(workspace, python, output)
    assert refused.returncode != 0 and "--overwrite_output_dir" in refused.stderr and "no checkpoint" in refused.stderr

    saving = ("--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1")
    run_example(workspace, python, output, *saving, "--max_steps", "2", "--seed", "1", "--overwrite_output_dir")
    first_losses = _losses(output / "checkpoint-2")
    shutil.copytree(output / "checkpoint-2", tmp_path / "kept" / "checkpoint-2")
    # The same command again: the run is finished, and resuming it would train a step past its end (transformers'
    # resume at max_steps) and rewrite its student; refused, the student untouched.
    student = (output / "model.safetensors").read_bytes()
    again = run_script(workspace, python, output, *saving, "--max_steps", "2")
    assert again.returncode != 0 and "holds a finished run" in again.stderr and "step 2 of 2" in again.stderr
    assert (output / "model.safetensors").read_bytes() == student and _losses(output / "checkpoint-2") == first_losses
    # Another seed: a run that started over would log other losses for steps 1-2 than the first run did.
    resumed = run_script(workspace, python, output, *saving, "--max_steps", "3")
    assert resumed.returncode == 0 and f"Resuming from {output / 'checkpoint-2'}" in resumed.stderr
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-3"]
    assert _losses(output / "checkpoint-3")[:2] == first_losses and len(_losses(output / "checkpoint-3")) == 3

    explicit = tmp_path / "kept" / "checkpoint-2"
    resumed = run_script(workspace, python, output, *saving, "--max_steps", "4", "--resume_from_checkpoint",
                         str(explicit))
    assert resumed.returncode == 0 and f"Resuming from {explicit}" in resumed.stderr
    assert _losses(output / "checkpoint-4")[:2] == first_losses and len(_losses(output / "checkpoint-4")) == 4


def test_an_output_dir_over_the_teacher_is_refused_before_anything_is_written(workspace, tmp_path):
    """What `make demo` passes (--overwrite_output_dir) with the teacher's own folder as --output_dir: the student
    would have replaced the teacher's weights and config."""
    teacher = tmp_path / "teacher"
    shutil.copytree(workspace / "teacher", teacher)
    before = {path.name: path.read_bytes() for path in teacher.iterdir()}
    result = run_script(workspace, [sys.executable], teacher, "--teacher", str(teacher), "--overwrite_output_dir")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-4000:]
    assert f"error: output_dir '{teacher}' is the teacher's folder" in result.stderr
    assert {path.name: path.read_bytes() for path in teacher.iterdir()} == before


def _losses(checkpoint: Path) -> list[float]:
    """The training loss of every logged step, in a checkpoint's trainer state (resumed runs carry the earlier ones)."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def _help_defaults(result: subprocess.CompletedProcess) -> dict[str, str]:
    """``--flag`` → the ``(default: ...)`` that ``--help`` prints for it."""
    assert result.returncode == 0, result.stderr[-4000:]
    entries = re.split(r"\n  (?=--)", result.stdout.split("options:", 1)[1])
    defaults = {}
    for entry in entries:
        found = re.findall(r"\(default: ([^)]*)\)", " ".join(entry.split()))
        if found:
            defaults[entry.split()[0]] = found[-1]
    return defaults


def test_help_shows_the_defaults_that_run_and_the_shipped_recipes(workspace):
    defaults = _help_defaults(run_bare(workspace, "--help"))
    assert defaults["--per_device_train_batch_size"] == "64" and defaults["--learning_rate"] == "0.002"
    assert defaults["--output_dir"] == "outputs/distill_vit" and defaults["--eval_strategy"] == "epoch"
    assert defaults["--negatives"] == "the preset's" and defaults["--num_train_epochs"] == "4"
    assert defaults["--preset"] == "cktf"
    assert defaults["--student"] == "cktf-vit-tiny:patch=7" and defaults["--teacher"].endswith("fashion-mnist-resnet")
    assert defaults["--train_val_split"] == "0.15"

    benchmark = _help_defaults(run_bare(workspace, str(ROOT / "examples" / "recipes" / "benchmark.yaml"), "--help"))
    assert benchmark["--per_device_train_batch_size"] == "128" and benchmark["--learning_rate"] == "0.002"
    assert benchmark["--num_train_epochs"] == "10" and benchmark["--nce_k"] == "4096"
    assert benchmark["--negatives"] == "memory_bank" and benchmark["--save_strategy"] == "no"
    demo = _help_defaults(run_bare(workspace, "--config", str(ROOT / "examples" / "recipes" / "demo.yaml"), "--help"))
    assert demo == defaults  # the demo recipe spells out the script's defaults


@pytest.mark.slow
def test_recipe_file_with_command_line_overrides(workspace, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 2\nper_device_train_batch_size: 4\nlearning_rate: 1e-3\neval_strategy: no\n"
                      "dataset: images\n")  # an alias as a key; YAML's `no` is the choice "no"
    output = tmp_path / "student"
    result = subprocess.run(
        [sys.executable, SCRIPT, str(recipe), "--teacher", str(workspace / "teacher"), "--student", "cktf-vit-nano",
         "--output_dir", str(output), "--max_steps", "3", "--use_cpu", "--card_latency", "false", "--save_strategy",
         "no", "--do_train"], capture_output=True, text=True, timeout=300, env=ENV, cwd=str(workspace))
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["train_batch_size"] == 4  # the flag won; the recipe's batch stayed
    assert "of 3 classes (split 'train')" in result.stdout  # dataset: images, from the recipe

    recipe.write_text("learning_rat: 1e-3\n")
    refused = run_bare(workspace, "--config", str(recipe))
    assert refused.returncode != 0 and "unknown key 'learning_rat'" in refused.stderr
    assert "did you mean 'learning_rate'" in refused.stderr


@pytest.mark.slow
def test_image_folders_split_and_seeded_samples(workspace, tmp_path):
    """A folder of class folders without a validation split is split by --train_val_split; --max_*_samples draw
    across classes (the first 9 images of the folder hold one class)."""
    images = str(workspace / "images")
    result = run_bare(workspace, "--teacher", str(workspace / "teacher"), "--student", "cktf-vit-nano",
                      "--train_dir", images, "--output_dir", str(tmp_path / "split"), "--max_steps", "1",
                      "--max_train_samples", "9", "--use_cpu", "--card_latency", "false", "--save_strategy", "no",
                      "--teacher_check", "false")  # an untrained teacher
    assert result.returncode == 0, result.stderr[-4000:]
    assert "9 training images of 3 of 3 classes (split 'train')" in result.stdout
    assert "6 evaluation images of 3 of 3 classes (split 'validation')" in result.stdout  # 15 % of 36, stratified

    wrong = run_bare(workspace, "--teacher", str(workspace / "teacher"), "--train_dir", images, "--label_column_name",
                     "shape", "--output_dir", str(tmp_path / "wrong"), "--use_cpu")
    assert wrong.returncode != 0 and "--label_column_name 'shape' is not a column" in wrong.stderr


@pytest.mark.slow
def test_do_train_and_do_eval_are_honoured(workspace, tmp_path):
    trained = tmp_path / "trained"
    run_example(workspace, [sys.executable], trained, "--do_train", "--logging_steps", "1")
    assert (trained / "train_results.json").is_file() and not (trained / "eval_results.json").exists()
    history = json.loads((trained / "trainer_state.json").read_text())["log_history"]
    assert not any("eval_loss" in entry for entry in history)

    evaluated = tmp_path / "evaluated"
    result = run_script(workspace, [sys.executable], evaluated, "--do_eval", "--student", str(trained))
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((evaluated / "eval_results.json").read_text())
    assert metrics["eval_samples"] == 36 and "teacher_accuracy" in metrics
    assert not (evaluated / "train_results.json").exists() and not (evaluated / "model.safetensors").exists()


@pytest.mark.slow
def test_torchrun_without_accelerator_runs_one_data_parallel_job(workspace, tmp_path):
    """No --use_cpu and no accelerator: the two processes share the work (an epoch of 36 images takes 3 steps of
    2 processes × 8 images, against 5 steps for one process); the card and the summary happen once."""
    output = tmp_path / "student"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_script(workspace, torchrun, output, "--max_steps", "3", use_cpu=False,
                        env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((output / "all_results.json").read_text())
    assert results["epoch"] == 1.0  # 36 images in 3 steps of 2 processes × 8; one process would be at 0.6
    assert result.stdout.count("CKTF distillation") == 1 and result.stdout.count("accuracy (top-1)") == 1
    assert (output / "README.md").is_file() and (output / "model.safetensors").is_file()


@pytest.mark.slow
def test_report_to_tensorboard_logs_every_loss_component(workspace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "student"
    run_example(workspace, [sys.executable], output, "--report_to", "tensorboard", "--logging_steps", "1")
    events = sorted((output / "runs").rglob("events.out.tfevents.*"))
    assert events, f"no event file under {output / 'runs'}"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    logged = {key for entry in history if "loss" in entry for key in entry if key != "step"}
    assert {"loss", "ce", "contrast_final", "contrast_s1_t1"} <= logged
    assert {f"train/{key}" for key in logged} <= scalars, sorted(scalars)
    assert len(accumulator.Scalars("train/contrast_final")) == 3  # one point per step


@pytest.mark.slow
def test_trust_remote_code_reaches_every_loader(workspace, tmp_path):
    """A teacher (and a student loaded from a folder) whose config names custom code: refused without
    --trust_remote_code, loaded by the processor, config, student and teacher loaders with it."""
    remote = tmp_path / "remote"
    shutil.copytree(workspace / "teacher", remote)
    (remote / "custom_resnet.py").write_text(
        "from transformers import ResNetConfig, ResNetForImageClassification\n\n\n"
        "class RemoteResNetConfig(ResNetConfig):\n    model_type = 'cktf-remote-resnet'\n\n\n"
        "class RemoteResNetForImageClassification(ResNetForImageClassification):\n"
        "    config_class = RemoteResNetConfig\n")
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="cktf-remote-resnet", auto_map={
        "AutoConfig": "custom_resnet.RemoteResNetConfig",
        "AutoModelForImageClassification": "custom_resnet.RemoteResNetForImageClassification"})
    (remote / "config.json").write_text(json.dumps(config))
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    common = ("--teacher", str(remote), "--student", str(remote), "--do_train")
    refused = run_script(workspace, [sys.executable], tmp_path / "refused", *common, env=env)
    assert refused.returncode != 0 and "trust_remote_code" in refused.stderr
    output = tmp_path / "student"
    result = run_script(workspace, [sys.executable], output, *common, "--trust_remote_code", env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "teacher     " + str(remote) + ": RemoteResNetForImageClassification" in result.stdout
    assert "student     " + str(remote) + ": RemoteResNetForImageClassification" in result.stdout


def _load_script(name: str):
    """examples/distill_vit.py as a module (its functions, without running it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses look their module up
    spec.loader.exec_module(script)
    return script


def test_the_card_names_a_dataset_by_its_hub_id_or_in_words(tmp_path):
    """Only a Hub id reaches the card's `datasets` metadata: a packaged builder with --data_dir (the way to a folder of
    parquet files) was written as `datasets: [parquet]`, a link to a Hub page that does not exist."""
    from cktf_hf.card_facts import is_hub_dataset

    script = _load_script("distill_vit_script")
    label = lambda **kw: script._dataset_label(script.DataArguments(**kw))  # noqa: E731
    assert label(dataset_name="fashion_mnist") == "zalando-datasets/fashion_mnist"
    assert not is_hub_dataset(label(dataset_name="mnist"))  # a 5,000-image subset is not the Hub's `mnist`
    assert label(dataset_name="uoft-cs/cifar10") == "uoft-cs/cifar10"
    (tmp_path / "my_images").mkdir()
    assert label(train_dir=f"{tmp_path}/my_images/") == "my_images (local folder)"
    assert label(dataset_name=str(tmp_path / "my_images")) == "my_images (local folder)"
    for builder in ("parquet", "imagefolder"):
        named = label(dataset_name=builder, data_dir=str(tmp_path / "my_images"))
        assert named == f"my_images (local {builder} files)" and not is_hub_dataset(named)


def test_the_end_of_run_summary_is_built_from_the_metrics_and_measure(tmp_path):
    """No model card, no benchmark results file: the metrics of this run and the models measured now, formatted as the
    card formats them (cktf_hf.formatting), with the spread of the repeated latency timings."""
    import tiny
    from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
    from cktf_hf.formatting import format_bytes, format_count, format_ratio
    from cktf_hf.measure import measure_model

    script = _load_script("distill_vit_summary")
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                         card_latency_batch_sizes=[2])
    teacher, student = tiny.vit(64, 4), tiny.vit(32, 2, seed=1)
    trainer = ContrastiveDistillationTrainer(model=student, args=args, teacher_model=teacher,
                                             train_dataset=tiny.digits("train", 8))
    sizes = [measure_model(model, (3, 16, 16), []) for model in (teacher, student)]
    lines = script.summary(trainer, {"eval_accuracy": 0.5, "teacher_accuracy": 0.75}, trained=True).splitlines()
    assert lines[2].split() == ["accuracy", "(top-1)", "75.00%", "50.00%"]
    assert re.fullmatch(rf"parameters +{re.escape(format_count(sizes[0].parameters))} +"
                        rf"{re.escape(format_count(sizes[1].parameters))}", lines[3])
    assert re.fullmatch(rf"size on disk +{re.escape(format_bytes(sizes[0].size_bytes))} +"
                        rf"{re.escape(format_bytes(sizes[1].size_bytes))}", lines[4])
    ms = r"\d+(\.\d+)?"
    timing = rf"{ms} \({ms}–{ms}\)"  # the median of the repeats (their lowest–highest)
    assert re.fullmatch(rf"CPU latency, batch 2 \(ms\) +{timing} +{timing}", lines[5]), lines[5]
    assert lines[6].startswith(f"compression {format_ratio(sizes[0].parameters, sizes[1].parameters)} fewer "
                               "parameters; latency measured as: CPU")
    no_teacher_score = script.summary(trainer, {"eval_accuracy": 0.5}, trained=True).splitlines()
    assert no_teacher_score[2].split() == ["accuracy", "(top-1)", "not", "scored", "50.00%"]
    trainer.args.card_latency = False
    evaluation_only = script.summary(trainer, {}, trained=False)
    assert "accuracy" not in evaluation_only and "CPU latency" not in evaluation_only
    assert "evaluation only: metrics written to" in evaluation_only


def test_the_startup_summary_gives_the_teacher_checks_score(tmp_path):
    import tiny
    from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer

    script = _load_script("distill_vit_startup")
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                         teacher_check=False)
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 8))
    startup = lambda: script.startup_summary(trainer, "cktf-vit-nano", script.DataArguments(), None, None)  # noqa: E731
    assert "  teacher check  off (--teacher_check false)" in startup()
    trainer.teacher_check_accuracy = 0.875  # what check_teacher_accuracy found
    assert "  teacher check  the teacher scores 87.50% on up to 256 evaluation images" in startup()


# --------------------------------------------------------------------------- known user errors: one `error:` line
def _main(monkeypatch, workspace, output: Path, *extra: str):
    """examples/distill_vit.py's main() in this process, on the test settings and ``extra``."""
    script = _load_script("distill_vit_main")
    monkeypatch.setattr(sys, "argv", [SCRIPT, *script_arguments(workspace, output, *extra)])
    return script.main()


def _error_line(capsys, monkeypatch, workspace, output: Path, *extra: str) -> str:
    """The one `error:` line main() ends with: exit status 2, as the argument parser's own refusals (no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        _main(monkeypatch, workspace, output, *extra)
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1, errors
    return errors[0]


def _renamed_images(workspace, folder: Path, names: dict[str, str]) -> Path:
    """The workspace's image folder with class folders renamed (``names``: old → new)."""
    for name in CLASSES:
        shutil.copytree(workspace / "images" / name, folder / names.get(name, name))
    return folder


def test_known_user_errors_are_one_error_line_with_the_fix_and_status_2(workspace, tmp_path, capsys, monkeypatch):
    """The teacher check, nce_k, the label spaces and a folder that does not load ended in tracebacks; the shrink
    refusal in exit status 1."""
    line = lambda *extra: _error_line(capsys, monkeypatch, workspace, tmp_path / "out", *extra)  # noqa: E731
    refused = line("--teacher_check", "true")  # an untrained teacher: near chance
    assert "The teacher scores" in refused and "set teacher_check=False (--teacher_check false)" in refused
    assert "nce_k=1,000 is larger than the 24 other-class negatives" in line("--negatives", "memory_bank", "--nce_k",
                                                                              "1000")
    refused = line("--student", "teacher:depth=0.5")
    assert "depth=0.5 removes no layer" in refused and "Shrink it with width < 1" in refused
    triangles = _renamed_images(workspace, tmp_path / "triangles", {"stripe": "triangle"})
    refused = line("--dataset", str(triangles))
    assert "class names differ from the teacher's id2label" in refused and "--label_map" in refused
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.parquet").write_bytes(b"not a parquet file")
    refused = line("--dataset", str(broken))
    assert f"Could not load the folder '{broken}' as a dataset" in refused and "parquet, arrow" in refused


def test_a_checkpoint_whose_objective_changed_is_one_error_line(workspace, tmp_path, capsys, monkeypatch):
    every_two = ("--save_strategy", "steps", "--save_steps", "2")
    _main(monkeypatch, workspace, tmp_path / "run", "--max_steps", "2", *every_two)
    refused = _error_line(capsys, monkeypatch, workspace, tmp_path / "run", "--max_steps", "4", *every_two,
                          "--preset", "crd")
    assert "The distillation state in" in refused and "does not fit this run" in refused
    assert "the checkpoint has terms this run lacks" in refused


def test_a_teacher_that_cannot_be_scored_is_not_evaluated(workspace, tmp_path, capsys, monkeypatch):
    """None of the dataset's classes is the teacher's (allowed): no teacher accuracy in the summary, the results or
    the card (evaluate_teacher scored the teacher's own classes against the dataset's labels)."""
    shapes = _renamed_images(workspace, tmp_path / "shapes", {"circle": "a", "square": "b", "stripe": "c"})
    capsys.readouterr()
    _main(monkeypatch, workspace, tmp_path / "out", "--dataset", str(shapes), "--allow_label_mismatch", "true")
    out = capsys.readouterr().out
    assert "classes: 0 of the dataset's 3 classes are the teacher's" in out
    assert "teacher check  not run: the teacher's classes are not the dataset's" in out
    assert re.search(r"accuracy \(top-1\)\s+not scored\s+\d+\.\d\d%", out)
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert "eval_accuracy" in results and not any(key.startswith("teacher_") for key in results)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| Teacher (" not in card and "The teacher has no accuracy here" in card
