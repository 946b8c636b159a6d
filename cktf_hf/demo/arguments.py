"""``RecipeArgumentParser``: an ``HfArgumentParser`` that reads a recipe file under the command line, for the examples.

A recipe is a YAML (``.yaml`` / ``.yml``) or JSON (``.json``, transformers' ``script.py args.json``) mapping of flag
names (without ``--``) to values, given first (``script.py recipe.yaml --seed 1``) or as ``--config FILE``; flags on the
command line win over it. It is read strictly, since it is data that others may share:

- one recipe per run; at most ``MAX_RECIPE_BYTES``, UTF-8 text;
- YAML without aliases (``*name``: they can expand a small file into gigabytes) and without duplicate keys (JSON too);
- every key a flag of the script (an unknown one is refused with the closest flag), named once;
- every value converted and checked by its flag's own type and choices;
- ``trust_remote_code`` only on the command line (or in Python), never from a recipe.

Each refusal is one ``error:`` line naming the file and the key, with exit status 2 (``parser.error``).
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import re
import sys
import types
import typing
from typing import Any, Optional

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

__all__ = ["MAX_RECIPE_BYTES", "RECIPE_SUFFIXES", "RecipeArgumentParser", "check_positive"]

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few dozen lines
COMMAND_LINE_ONLY = ("trust_remote_code",)  # a shared file must not enable running code


class _StrictYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError(f"aliases (*name) are not accepted in a recipe{self.peek_event().start_mark}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    raise yaml.YAMLError(f"duplicate key {key!r}{key_node.start_mark}")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"duplicate key {key!r}")
        mapping[key] = value
    return mapping


class _OneDefaultHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default once: a help text that words its own default (``(default: the preset's)``) keeps it
    while the field is unset (``None``), and gives way to the value a recipe or the script sets."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        worded = re.search(r" ?\(default: [^)]*\)", action.help or "")
        if worded is None:
            return super()._get_help_string(action)
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        return action.help.replace(worded.group(0), "") + " (default: %(default)s)"


class RecipeArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` plus a recipe file (see the module docstring); :meth:`parse_args_and_config` parses both.

    After parsing, :attr:`given` holds the fields set on the command line or by the recipe (not left to a default),
    for scripts whose defaults depend on what the user chose (``--do_train`` alone: no evaluation).
    """

    def __init__(self, dataclass_types: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _OneDefaultHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `--learning_rat` is an error with a suggestion, not a guess
        kwargs.setdefault("usage", "%(prog)s [RECIPE.yaml | ARGS.json] [--config FILE] [--FLAG VALUE ...] "
                                   "(--help lists the flags)")
        super().__init__(dataclass_types, **kwargs)
        self.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                          help="A recipe: YAML or JSON, flag_name: value; flags on the command line override it. "
                               "`%(prog)s recipe.yaml` works too. (default: none)")
        self.given: frozenset[str] = frozenset()
        hints = {}
        for dtype in self.dataclass_types:
            hints.update(typing.get_type_hints(dtype))
        self._field_kinds = {name: _kinds(hint) for name, hint in hints.items()}

    def parse_args_and_config(self, args: Optional[list[str]] = None) -> tuple[Any, ...]:
        """The dataclasses from the command line over a recipe (``RECIPE`` first or ``--config RECIPE``) over the
        defaults, in the style of trl's ``TrlParser.parse_args_and_config``."""
        command_line = self.apply_config(args)
        return self.parse_command_line(command_line)

    def apply_config(self, args: Optional[list[str]] = None) -> list[str]:
        """Read the recipe named in ``args`` (default ``sys.argv[1:]``) into the parser's defaults, record
        :attr:`given`, and return the command line without the recipe."""
        command_line, path = self._split_recipe(list(sys.argv[1:] if args is None else args))
        recipe = self._read_recipe(path) if path is not None else {}
        self.set_defaults(**recipe)
        self.given = frozenset(self._given_on(command_line) | set(recipe))
        return command_line

    def parse_command_line(self, command_line: list[str]) -> tuple[Any, ...]:
        """``parse_args_into_dataclasses`` with unknown flags and the dataclasses' ``ValueError`` as ``error:``
        lines."""
        try:
            *outputs, remaining = self.parse_args_into_dataclasses(args=command_line, return_remaining_strings=True,
                                                                   look_for_args_file=False)
        except ValueError as err:
            self.error(str(err))
        if remaining:
            self.error(f"unrecognized arguments: {' '.join(remaining)}{self._suggestion(remaining[0])}")
        return tuple(outputs)

    # ------------------------------------------------------------------------------------------ the recipe
    def _split_recipe(self, argv: list[str]) -> tuple[list[str], Optional[str]]:
        paths, rest = [], []
        if argv and not argv[0].startswith("-") and argv[0].lower().endswith(RECIPE_SUFFIXES):
            paths.append(argv.pop(0))
        arguments = iter(argv)
        for arg in arguments:
            if arg == "--config":
                value = next(arguments, None)
                if value is None:
                    self.error("argument --config: expected one argument (a recipe file)")
                paths.append(value)
            elif arg.startswith("--config="):
                paths.append(arg.split("=", 1)[1])
            else:
                rest.append(arg)
        if len(paths) > 1:
            self.error(f"one recipe per run, got {len(paths)}: {', '.join(paths)}. Merge them into one file, or give "
                       "the values that differ as flags.")
        return rest, (paths[0] if paths else None)

    def _read_recipe(self, path: str) -> dict[str, Any]:
        """The recipe as parser defaults (field name → converted value)."""
        mapping = self._load(path)
        actions = self._recipe_actions()
        values: dict[str, Any] = {}
        named: dict[str, str] = {}
        for key, value in mapping.items():
            action = actions.get(f"--{key}")
            if action is None:
                self.error(f"recipe {path}: unknown key {key!r}{self._suggestion(f'--{key}')}. Keys are the "
                           "script's flag names without '--' (see --help).")
            if action.dest in COMMAND_LINE_ONLY:
                self.error(f"recipe {path}: key {key!r} is refused: a recipe never enables running a model's own "
                           f"code. Pass --{action.dest} on the command line if you have read and trust that code.")
            if action.dest in named:
                self.error(f"recipe {path}: keys {named[action.dest]!r} and {key!r} both set {action.dest}; keep one.")
            named[action.dest] = str(key)
            values[action.dest] = self._convert(action, str(key), value, path)
        return values

    def _load(self, path: str) -> dict[Any, Any]:
        if not os.path.isfile(path):
            self.error(f"recipe {path}: no such file.")
        size = os.path.getsize(path)
        if size > MAX_RECIPE_BYTES:
            self.error(f"recipe {path} is {size:,} bytes; a recipe may hold at most {MAX_RECIPE_BYTES:,}.")
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            self.error(f"recipe {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}).")
        try:
            if path.lower().endswith(".json"):
                content = json.loads(text, object_pairs_hook=_refuse_duplicate_json_keys)
            else:
                stream = io.StringIO(text)
                stream.name = path  # named in the error marks
                content = yaml.load(stream, Loader=_StrictYamlLoader)  # noqa: S506 (a SafeLoader)
        except (yaml.YAMLError, ValueError) as err:
            kind = "JSON" if path.lower().endswith(".json") else "YAML"
            self.error(f"recipe {path} is not valid {kind}: {' '.join(str(err).split())}")
        except RecursionError:
            self.error(f"recipe {path} nests too deeply.")
        if content is None:
            return {}
        if not isinstance(content, dict):
            self.error(f"recipe {path} must be a mapping of flag names to values, got {type(content).__name__}.")
        return content

    def _convert(self, action: argparse.Action, key: str, value: Any, path: str) -> Any:
        """``value`` as the flag's own type and choices would give it on the command line."""
        where = f"recipe {path}: key {key!r}"
        kinds = self._field_kinds.get(action.dest, set())
        if isinstance(value, dict):
            if dict in kinds:
                return value
            self.error(f"{where} takes one value, not a mapping.")
        if action.nargs in ("+", "*"):
            items = value if isinstance(value, list) else [value]
            return [self._convert_one(action, where, item, kinds) for item in items]
        if isinstance(value, list):
            self.error(f"{where} takes one value, not a list.")
        return self._convert_one(action, where, value, kinds)

    def _convert_one(self, action: argparse.Action, where: str, value: Any, kinds: set[type]) -> Any:
        if value is None:
            if type(None) in kinds:
                return None
            self.error(f"{where} needs a value (null given).")
        if isinstance(value, (list, dict)):
            self.error(f"{where} takes single values, not a {type(value).__name__}.")
        convert = action.type or str
        if isinstance(value, bool) and convert is not string_to_bool:
            if value is False and "no" in (action.choices or ()):
                value = "no"  # YAML reads an unquoted `no` as false: `eval_strategy: no` means the choice "no"
            else:
                takes = f"one of {list(action.choices)}" if action.choices else f"a {_type_name(convert)} value"
                self.error(f"{where} is {str(value).lower()} (YAML reads unquoted yes/no/on/off as booleans), but "
                           f"the flag takes {takes}: quote it.")
        if convert is float and type(value) is int:
            return value  # an int is a float value (the numeric tower): `num_train_epochs: 4` stays 4
        try:
            converted = convert(value if isinstance(value, (str, bool)) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            self.error(f"{where}: {value!r} is not a valid {_type_name(convert)} value.")
        if action.choices is not None and converted not in action.choices:
            self.error(f"{where}: {value!r} is not one of {list(action.choices)}.")
        return converted

    def _recipe_actions(self) -> dict[str, argparse.Action]:
        """Option string → action, for what a recipe may set (fields; not the ``--no_*`` switches, help, config)."""
        return {option: action for action in self._actions if action.dest in self._field_kinds
                and not isinstance(action, argparse._StoreFalseAction) for option in action.option_strings}

    def _suggestion(self, option: str) -> str:
        close = difflib.get_close_matches(option.split("=", 1)[0], list(self._recipe_actions()), n=1)
        return f" (did you mean {close[0][2:]!r}?)" if close else ""

    def _given_on(self, command_line: list[str]) -> set[str]:
        """The fields that the flags on ``command_line`` set: argparse fills in no default for a field the namespace
        already holds, so every field starts as a marker that only a given flag replaces."""
        unset = object()
        namespace = argparse.Namespace(**dict.fromkeys(self._field_kinds, unset))
        namespace, _ = self.parse_known_args(command_line, namespace=namespace)
        return {name for name, value in vars(namespace).items() if value is not unset}


def check_positive(arguments: Any, *names: str) -> None:
    """Refuse a count below 1 among the fields ``names`` of ``arguments`` (``--max_train_samples 0`` would otherwise
    mean "all"); ``None`` (not given) passes. For the scripts' ``__post_init__``: the parser reports it as an
    ``error:`` line."""
    for name in names:
        value = getattr(arguments, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive count, got {value}; leave it out to use the whole split.")


def _kinds(hint: Any) -> set[type]:
    """The types a field's annotation admits, by origin: ``dict | str | None`` → ``{dict, str, NoneType}``."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {typing.get_origin(member) or member for member in members}


def _type_name(convert: Any) -> str:
    if convert is string_to_bool:
        return "true/false"
    return getattr(convert, "__name__", "string").replace("_", " ")

