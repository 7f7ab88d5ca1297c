"""Shell completion: ``artfs completion bash|zsh`` prints a script made from the argparse tree.

The script completes commands, options and choices from tables generated here, artifact names and NAME:REF (versions and aliases) by asking
``artfs __complete`` (hidden), which reads the store and never creates one; where it offers
nothing (a PATH, DEST or MOUNTPOINT) the shell's default completion offers paths. zsh runs the
bash function through zsh's bashcompinit.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..catalog.db import MARKER, default_store_path

_BASH = r'''# bash completion for artfs: eval "$(artfs completion bash)" in ~/.bashrc, or save the output
# as ~/.local/share/bash-completion/completions/artfs
_artfs_words() {  # COMP_WORDS with NAME : REF joined again (":" is in COMP_WORDBREAKS)
    aw=() ac=0
    local i w
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        if ((i > 0 && ${#aw[@]} > 0)) && [[ $w == : || ${COMP_WORDS[i-1]} == : ]]; then
            aw[${#aw[@]}-1]+=$w
        else
            aw+=("$w")
        fi
        ((i == COMP_CWORD)) && ac=$((${#aw[@]} - 1))
    done
    return 0
}
_artfs() {
    local -a aw store=() kinds
    local ac cmd= npos=0 i w
    local -A opts=(@OPTS@
    ) vals=(@VALS@
    ) pos=(@POS@
    )
    _artfs_words
    local cur=${aw[ac]} prev=${aw[ac-1]}
    COMPREPLY=()
    for ((i = 1; i < ac; i++)); do
        w=${aw[i]}
        if [[ -z $cmd ]]; then
            case $w in
                --store) store=(--store "${aw[i+1]}"); ((i++));;
                --store=*) store=("$w");;
                -*) ;;
                *) cmd=$w;;
            esac
        elif [[ " ${vals[$cmd]} " == *" $w "* ]]; then
            ((i++))
        elif [[ $w != -* ]]; then
            ((npos++))
        fi
    done
    if [[ -z $cmd ]]; then
        if [[ $prev == --store ]]; then
            return 0   # a path: the shell's default completion
        elif [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "@GLOBAL@" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
        fi
        return 0
    fi
    [[ " ${vals[$cmd]} " == *" $prev "* ]] && return 0
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${opts[$cmd]}" -- "$cur"))
        return 0
    fi
    kinds=(${pos[$cmd]})
    case ${kinds[npos]} in
        =*)
            w=${kinds[npos]#=}
            COMPREPLY=($(compgen -W "${w//,/ }" -- "$cur"));;
        names)
            COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${store[@]}" __complete names 2>/dev/null)" -- "$cur"));;
        refs)
            if [[ $cur == *:* ]]; then
                COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${store[@]}" __complete refs "${cur%%:*}" 2>/dev/null)" -- "$cur"))
                if [[ $COMP_WORDBREAKS == *:* ]]; then  # bash replaces only what follows the last ":"
                    local typed=${cur%"${cur##*:}"}
                    COMPREPLY=("${COMPREPLY[@]#"$typed"}")
                fi
            else
                compopt -o nospace 2>/dev/null  # NAME, then ":REF" or a space
                COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${store[@]}" __complete names 2>/dev/null)" -- "$cur"))
            fi;;
    esac   # files: none here, so the shell's default completion (-o default) offers paths
    return 0
}
complete -o default -F _artfs artfs
'''

_ZSH = r'''# zsh completion for artfs: eval "$(artfs completion zsh)" in ~/.zshrc, after compinit
autoload -U +X bashcompinit && bashcompinit
'''


def _kind(action: argparse.Action) -> str:
    if action.choices:
        return "=" + ",".join(action.choices)
    metavar = action.metavar or ""
    if metavar == "NAME":
        return "names"
    if metavar.startswith("NAME") and ":" in metavar:
        return "refs"
    return "other"


def _words(actions) -> list[str]:
    return [s for a in actions for s in a.option_strings]


def _assoc(table: dict[str, list[str]]) -> str:
    return "".join(f'\n        [{name}]="{" ".join(words)}"' for name, words in table.items())


def bash_script(parser: argparse.ArgumentParser) -> str:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = {name: p for name, p in sub.choices.items() if not name.startswith("__")}
    opts, vals, pos = {}, {}, {}
    for name, p in commands.items():
        opts[name] = _words(p._actions)
        vals[name] = _words(a for a in p._actions if a.option_strings and a.nargs != 0)
        pos[name] = [_kind(a) for a in p._actions if not a.option_strings]
    fill = {"@OPTS@": _assoc(opts), "@VALS@": _assoc(vals), "@POS@": _assoc(pos),
            "@GLOBAL@": " ".join(_words(parser._actions)), "@COMMANDS@": " ".join(commands)}
    script = _BASH
    for key, value in fill.items():
        script = script.replace(key, value)
    return script


def cmd_completion(args) -> int:
    from .main import build_parser   # the whole tree, this command included
    script = bash_script(build_parser())
    sys.stdout.write(script if args.shell == "bash" else _ZSH + script)
    return 0


def cmd_complete(args) -> int:
    """Words for the completion script: artifact names, or NAME:REF of one artifact. Quiet and
    empty on any error; never creates a store."""
    path = os.path.abspath(args.store or default_store_path())
    if not os.path.exists(os.path.join(path, MARKER)):
        return 0
    from ..api.store import Store
    try:
        with Store(path) as store:
            if args.what == "names":
                words = store.artifacts()
            else:
                words = [f"{args.name}:{ref}" for v in store.versions(args.name)
                         for ref in [v.version, *v.aliases]]
    except Exception:   # noqa: BLE001 - a completion must never print an error into the prompt
        return 0
    print("\n".join(words))
    return 0


def register(sub) -> None:
    c = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print a completion script for commands, options, paths, "
                       "artifact names and NAME:REF. bash: eval \"$(artfs completion bash)\" in "
                       "~/.bashrc; zsh: eval \"$(artfs completion zsh)\" in ~/.zshrc after "
                       "compinit.")
    c.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    c.set_defaults(func=cmd_completion, no_store=True)

    c = sub.add_parser("__complete", description="Words for the completion script (hidden).")
    c.add_argument("what", choices=("names", "refs"), help="artifact names, or NAME:REF of NAME")
    c.add_argument("name", nargs="?", help="the artifact whose versions and aliases to list")
    c.set_defaults(func=cmd_complete, no_store=True)
