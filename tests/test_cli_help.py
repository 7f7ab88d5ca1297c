"""Help on every command and argument, and shell completion run in a real bash (and zsh)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from artfs.cli.main import build_parser, main
from tests.helpers import run_cli, write

BIN = os.path.dirname(sys.executable)   # where the artfs script is


def parsers(parser: argparse.ArgumentParser, path=("artfs",), listed="the top"):
    """(command path, parser, its line in its parent's list of commands) for the whole tree;
    hidden commands (``__complete``) are not listed."""
    yield path, parser, listed
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            lines = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name), "hidden" if name.startswith("__") else lines.get(name))


def test_every_command_and_argument_has_help(capsys):
    missing = []
    for path, parser, listed in parsers(build_parser()):
        command = " ".join(path)
        if not listed:
            missing.append(f"{command}: no help in the command list")
        if not parser.description:
            missing.append(f"{command}: no description")
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction) and \
                    (not action.help or action.help == argparse.SUPPRESS):
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}: no help")
        with pytest.raises(SystemExit) as e:
            main([*path[1:], "--help"])
        assert e.value.code == 0 and (parser.description or "-").split()[0] in capsys.readouterr().out
    assert not missing, "\n".join(missing)
    assert len(list(parsers(build_parser()))) > 15


@pytest.fixture
def store(tmp_path):
    s = tmp_path / "store"
    write(tmp_path / "d" / "a", b"a")
    for name, aliases in (("animals", ["best"]), ("animals", []), ("plants", [])):
        run_cli(s, "put", name, tmp_path / "d", *[f"-a{a}" for a in aliases], check=True)
        write(tmp_path / "d" / "a", os.urandom(8))
    return s


def complete(*words: str, breaks: str | None = None, shell: str = "bash") -> list[str]:
    """COMPREPLY of the completion function for the command line WORDS (the last is the word
    under the cursor), split at ":" as bash does unless BREAKS (COMP_WORDBREAKS) lacks it."""
    if breaks is None or ":" in breaks:
        split = []
        for w in words:
            head, *rest = w.split(":")
            split.append(head)
            for part in rest:
                split += [":", part]
        words = tuple(split)
    script = ('source <(artfs completion bash)\n'
              + (f'COMP_WORDBREAKS={shlex.quote(breaks)}\n' if breaks is not None else '')
              + 'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"\n'
              '_artfs; printf "%s\\n" "${COMPREPLY[@]}"; complete -p artfs >&2\n')
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "-c", script, "bash", *words], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "-o default -F _artfs artfs" in proc.stderr, proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


def test_bash_completes_commands_options_and_choices():
    commands = complete("artfs", "")
    assert {"put", "get", "commit", "mount", "completion"} <= set(commands)
    assert "__complete" not in commands
    assert complete("artfs", "co") == ["compact", "commit", "completion"]
    assert complete("artfs", "--st") == ["--store"]
    assert complete("artfs", "put", "--me") == ["--message", "--metadata"]
    assert complete("artfs", "completion", "") == ["bash", "zsh"]
    assert complete("artfs", "put", "animals", "") == []          # a PATH: the shell's own
    assert complete("artfs", "put", "-m", "") == []               # an option's value


def test_bash_completes_names_and_refs_from_the_store(store, tmp_path):
    s = str(store)
    assert complete("artfs", "--store", s, "ls", "") == ["animals", "plants"]
    assert complete("artfs", "--store", s, "get", "an") == ["animals"]
    # bash splits NAME:REF at ":" and replaces only what follows it
    assert complete("artfs", "--store", s, "get", "animals:") == ["v0", "best", "v1", "latest"]
    assert complete("artfs", "--store", s, "diff", "animals:v0", "animals:l") == ["latest"]
    assert complete("artfs", "--store", s, "rm", "plants:") == ["v0", "latest"]
    # without ":" in COMP_WORDBREAKS the whole NAME:REF is one word
    assert complete("artfs", "--store", s, "get", "animals:b", breaks=" \t\n\"'><=;|&(") == ["animals:best"]
    assert complete("artfs", "--store", s, "put", "-m", "x", "pl") == ["plants"]
    missing = tmp_path / "no-store"
    assert complete("artfs", "--store", str(missing), "ls", "") == []
    assert not missing.exists()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_completes_through_bashcompinit(store):
    """What zsh's bashcompinit does for a TAB: compgen -F _artfs with words/CURRENT set (zsh
    filters the words by what is typed afterwards)."""
    script = ('autoload -U +X compinit && compinit -u\n'
              'eval "$(artfs completion zsh)"\n'
              'local -a words COMP_WORDS; local CURRENT COMP_CWORD\n'
              'words=("$@"); CURRENT=$#; COMP_WORDS=("${words[@]}"); (( COMP_CWORD = CURRENT - 1 ))\n'
              'compgen -F _artfs -- "${words[CURRENT]}"\n')
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}

    def zsh(*words):
        proc = subprocess.run(["zsh", "-f", "-c", script, "zsh", *words], capture_output=True, text=True,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()
    assert {"put", "commit", "completion"} <= set(zsh("artfs", "co"))
    assert zsh("artfs", "--store", str(store), "get", "animals:") == [
        "animals:v0", "animals:best", "animals:v1", "animals:latest"]
    assert zsh("artfs", "--store", str(store), "ls", "") == ["animals", "plants"]
