"""Building RecBole ``Config`` objects inside the plugin, and reading what RecBole would read.

RecBole's ``Config`` always parses ``sys.argv``.  A config that the plugin builds for
another purpose (the teacher's, a Ray trial's) must not inherit DELRec's command-line
overrides or a Ray worker's flags, so it is built with the command line hidden and every
value passed explicitly.  :func:`external_values` reads YAML files, ``config_dict`` and
``--key=value`` arguments the way RecBole does, so those values can be passed on explicitly.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import yaml
from recbole.config import Config


@contextmanager
def command_line(argv: Sequence[str]) -> Iterator[None]:
    """Let RecBole's ``Config`` see ``argv`` as the command-line arguments for the duration."""
    saved = sys.argv
    sys.argv = saved[:1] + list(argv)
    try:
        yield
    finally:
        sys.argv = saved


def hidden_command_line() -> AbstractContextManager[None]:
    """Let RecBole's ``Config`` see no command-line arguments for the duration."""
    return command_line(())


def isolated_config(
    model: str, dataset: str, config_dict: Mapping[str, Any], config_files: list[str] | None = None
) -> Config:
    """A RecBole ``Config`` from explicit values only (no command-line arguments)."""
    with hidden_command_line():
        return Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(config_dict))


def _reader() -> Config:
    """A ``Config`` that is only RecBole's readers (its YAML loader, its string conversion)."""
    reader = Config.__new__(Config)
    reader.yaml_loader = reader._build_yaml_loader()
    return reader


def check_config_files(paths: Sequence[str] | None) -> None:
    """Each of ``--config_files`` reads as RecBole reads it, a YAML mapping of settings.
    RecBole's own errors name no file: a YAML slip is reported 'in "<unicode string>"', and
    an empty file (or one of comments only) fails with "'NoneType' object is not iterable"."""
    loader = _reader().yaml_loader
    for path in paths or ():
        try:
            with open(path, encoding="utf-8") as file:  # a file object: YAML's messages name it
                values = yaml.load(file, Loader=loader)
        except OSError as error:
            raise FileNotFoundError(f"config file '{path}' (--config_files) cannot be read: {error}.") from error
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            raise ValueError(f"config file '{path}' is not valid YAML in UTF-8: {error}") from error
        if not isinstance(values, dict):
            found = "nothing" if values is None else f"a {type(values).__name__}"
            raise ValueError(f"config file '{path}' holds {found}, and RecBole reads a config file as settings "
                             f"(`key: value` lines): add some, or leave the file out of --config_files.")


def external_values(config_file_list: Sequence[str] | None = None, config_dict: Mapping[str, Any] | None = None,
                    argv: Sequence[str] = ()) -> dict[str, Any]:
    """What RecBole reads from YAML files, ``config_dict`` and ``--key=value`` args, merged.

    Uses RecBole's own readers (its YAML loader, its string conversion), in its order, so a
    run given these values explicitly (a seed, a sweep trial) sees exactly what a single
    ``run_delrec`` would see.
    """
    check_config_files(config_file_list)
    reader = _reader()
    values = reader._load_config_files(list(config_file_list or []))
    values.update(reader._load_variable_config_dict(dict(config_dict or {})))
    with command_line(argv):
        values.update(reader._load_cmd_line())
    return values
