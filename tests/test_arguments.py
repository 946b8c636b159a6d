"""The examples' one argument parser (cktf_hf.demo.RecipeArgumentParser): YAML and JSON recipes for every example, read
strictly (every refusal one `error:` line, exit status 2), trust_remote_code only from the command line, the preset's
objective fields over the script's defaults, and output folders apart from the data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import tiny
from cktf_hf import ContrastiveDistillationTrainer, MemoryBankNCELoss
from cktf_hf.demo import arguments

ROOT = Path(__file__).resolve().parents[1]


def example(name: str):
    """``examples/<name>.py`` as a module (registered, so its dataclasses resolve their annotations)."""
    module_name = f"cktf_test_arguments_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / f"{name}.py")
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


def write_recipe(path: Path, values: dict) -> str:
    """``values`` as YAML or JSON, by the file's suffix."""
    if path.suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()))
    return str(path)


def refusal(capsys, parse, argv: list[str]) -> str:
    """The one ``error:`` line that ``parse(argv)`` ends with (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as stopped:
        parse(argv)
    assert stopped.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


# ------------------------------------------------------------------------------------- one parser, three examples
def _distill_vit(argv):
    plan = example("distill_vit").parse_args(argv)
    return plan.student, plan.data, plan.run, plan.args


EXAMPLES = {  # each example's parse (its dataclasses), and a recipe of its own fields
    "distill_vit": (_distill_vit, {"max_steps": 2, "seed": 3, "dataset_name": "digits"}),
    "train_teacher": (lambda argv: example("train_teacher").parse_args(argv),
                      {"max_steps": 2, "seed": 3, "dataset": "digits"}),
    "transfer": (lambda argv: (example("transfer").parse_args(argv),), {"probe_epochs": 2, "seed": 3, "method": "crd"}),
}


def field_value(parsed: tuple, name: str):
    return next(getattr(arguments, name) for arguments in parsed if hasattr(arguments, name))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("form", ["positional", "--config"])
def test_every_example_reads_yaml_and_json_recipes_under_its_flags(tmp_path, name, suffix, form):
    parse, values = EXAMPLES[name]
    recipe = write_recipe(tmp_path / f"recipe{suffix}", values)
    given = [recipe] if form == "positional" else ["--config", recipe]
    assert {key: field_value(parse(given), key) for key in values} == values
    assert field_value(parse([*given, "--seed", "5"]), "seed") == 5  # the command line wins


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_refuses_an_unknown_key_with_a_suggestion(tmp_path, capsys, name):
    recipe = write_recipe(tmp_path / "recipe.yaml", {"sed": 1})
    line = refusal(capsys, EXAMPLES[name][0], [recipe])
    assert f"recipe {recipe}: unknown key 'sed' (did you mean 'seed'?)" in line


def test_the_train_teacher_recipe_decides_do_train_and_do_eval(tmp_path):
    recipe = write_recipe(tmp_path / "recipe.json", {"do_eval": True})
    _, _, training = example("train_teacher").parse_args([recipe])
    assert (training.do_train, training.do_eval) == (False, True)  # as `--do_eval` alone
    _, _, training = example("train_teacher").parse_args([])
    assert (training.do_train, training.do_eval) == (True, True)


# -------------------------------------------------------------------------------------------- read strictly
BAD_RECIPES = [  # file name, content, what the error says (beside the file's name)
    ("float.yaml", "seed: 4.2\n", "key 'seed': 4.2 is not a valid int value"),
    ("list.yaml", "max_steps: [1, 2]\n", "key 'max_steps' takes one value, not a list"),
    ("mapping.yaml", "teacher: {path: x}\n", "key 'teacher' takes one value, not a mapping"),
    ("choice.yaml", "eval_strategy: sometimes\n", "key 'eval_strategy': 'sometimes' is not one of"),
    ("switch.yaml", "use_cpu: maybe\n", "key 'use_cpu': 'maybe' is not a valid true/false value"),
    ("yes.yaml", "hub_model_id: yes\n",
     "key 'hub_model_id' is true (YAML reads unquoted yes/no/on/off as booleans), but the flag takes a str value"),
    ("null.yaml", "seed: null\n", "key 'seed' needs a value"),
    ("twice.yaml", "seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    ("twice.json", '{"seed": 1, "seed": 2}', "duplicate key 'seed'"),
    ("alias.yaml", "dataset: images\nsame: &a 1\nseed: *a\n", "aliases (*name) are not accepted"),
    ("bomb.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)),
     "aliases (*name) are not accepted"),
    ("both.yaml", "dataset: a\ndataset_name: b\n", "keys 'dataset' and 'dataset_name' both set dataset_name"),
    ("syntax.yaml", "seed: [1\n", "is not valid YAML"),
    ("syntax.json", '{"seed": 1', "is not valid JSON"),
    ("list_top.yaml", "- seed\n", "must be a mapping of flag names to values"),
    ("zero.yaml", "max_train_samples: 0\n", "--max_train_samples must be a positive count, got 0"),
]


@pytest.mark.parametrize("name, content, message", BAD_RECIPES, ids=[case[0] for case in BAD_RECIPES])
def test_a_bad_recipe_is_one_error_line_naming_the_file_and_the_key(tmp_path, capsys, name, content, message):
    recipe = tmp_path / name
    recipe.write_text(content)
    line = refusal(capsys, example("distill_vit").parse_args, [str(recipe)])
    assert message in line
    if "positive count" not in message:  # the dataclass's own check names the flag
        assert f"recipe {recipe}" in line


def test_non_utf8_bytes_a_size_limit_and_a_missing_file(tmp_path, capsys, monkeypatch):
    parse = example("distill_vit").parse_args
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("dataset_name: caf\u00e9\n".encode("latin-1"))
    assert f"recipe {latin} is not UTF-8 text (byte 0xe9 at offset 17)" in refusal(capsys, parse, [str(latin)])
    large = write_recipe(tmp_path / "large.yaml", {"seed": 1, "output_dir": "x" * 100})
    monkeypatch.setattr(arguments, "MAX_RECIPE_BYTES", 64)
    size = Path(large).stat().st_size
    assert size > 64 and f"recipe {large} is {size} bytes; a recipe may hold at most 64" in refusal(capsys, parse,
                                                                                                    [large])
    assert f"recipe {tmp_path / 'gone.yaml'}: no such file" in refusal(capsys, parse, [str(tmp_path / "gone.yaml")])


def test_one_recipe_per_run(tmp_path, capsys):
    first = write_recipe(tmp_path / "a.yaml", {"seed": 1})
    second = write_recipe(tmp_path / "b.json", {"max_steps": 2})
    for argv in ([first, "--config", second], ["--config", first, f"--config={second}"]):
        line = refusal(capsys, example("distill_vit").parse_args, argv)
        assert f"one recipe per run, got 2: {first}, {second}" in line


@pytest.mark.parametrize("flag, value", [("--max_train_samples", "0"), ("--max_eval_samples", "-1")])
def test_sample_counts_below_one_are_refused(capsys, flag, value):
    for name in ("distill_vit", "train_teacher"):
        parse = EXAMPLES[name][0]
        assert f"{flag} must be a positive count, got {value}" in refusal(capsys, parse, [flag, value])


def test_unknown_flags_and_abbreviations_are_refused_with_a_suggestion(capsys):
    line = refusal(capsys, example("distill_vit").parse_args, ["--learning_rat", "1e-3"])
    assert "unrecognized arguments: --learning_rat 1e-3 (did you mean 'learning_rate'?)" in line


# ------------------------------------------------------------------------------------------ trust_remote_code
def test_trust_remote_code_only_from_the_command_line(tmp_path, capsys):
    parse = example("distill_vit").parse_args
    for value in (True, False):
        recipe = write_recipe(tmp_path / "remote.yaml", {"seed": 1, "trust_remote_code": value})
        line = refusal(capsys, parse, [recipe])
        assert f"recipe {recipe}: key 'trust_remote_code' is refused" in line
        assert "Pass --trust_remote_code on the command line" in line
    assert parse(["--trust_remote_code"]).args.trust_remote_code is True


# ------------------------------------------------------------------------------ the preset over the script's defaults
@pytest.mark.parametrize("argv", [["--preset", "cktf-reference"],
                                  [str(ROOT / "examples" / "recipes" / "demo.yaml"), "--preset", "cktf-reference"]])
def test_a_memory_bank_preset_on_the_command_line_builds_the_memory_bank(tmp_path, argv):
    script = example("distill_vit")
    args = script.parse_args([*argv, "--output_dir", str(tmp_path), "--max_steps", "1", "--nce_k", "16",
                              "--per_device_train_batch_size", "16", "--eval_strategy", "no", "--save_strategy", "no",
                              "--use_cpu", "--report_to", "none"]).args
    assert args.negatives == "memory_bank" and args.objective_settings.negatives == "memory_bank"
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 32))
    assert isinstance(trainer.objective.contrastive["final"], MemoryBankNCELoss)
    described = script.describe_objective(trainer)
    assert described.startswith("preset cktf-reference: γ=1 CE") and "memory-bank negatives (nce_k 16)" in described
    assert "θ=0.1 each intermediate pair" in described


def test_the_users_negatives_win_over_the_preset(tmp_path):
    parse = example("distill_vit").parse_args
    assert parse(["--preset", "cktf-reference", "--negatives", "in_batch"]).args.negatives == "in_batch"
    recipe = write_recipe(tmp_path / "recipe.yaml", {"preset": "crd", "negatives": "in_batch"})
    assert parse([recipe]).args.negatives == "in_batch"
    assert parse([]).args.negatives == "in_batch"  # the default preset's (cktf)


# ------------------------------------------------------------------------------------- output apart from the data
@pytest.mark.parametrize("flag", ["--train_dir", "--validation_dir", "--dataset_name", "--data_dir"])
def test_an_output_dir_that_is_or_holds_a_data_folder_is_refused(tmp_path, capsys, flag):
    data = tmp_path / "data" / "images"
    data.mkdir(parents=True)
    parse = example("distill_vit").parse_args
    for output_dir, relation in ((data, "is"), (tmp_path / "data", "contains")):
        line = refusal(capsys, parse, [flag, str(data), "--output_dir", str(output_dir), "--overwrite_output_dir"])
        assert f"output_dir {str(output_dir)!r} {relation} the {flag} folder {str(data)!r}" in line
    assert parse([flag, str(data), "--output_dir", str(tmp_path / "student")]).args.output_dir == str(
        tmp_path / "student")
