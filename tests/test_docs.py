"""Every `alaya ...` command shown in README.md and docs/ parses with today's CLI, so the docs cannot drift from it.

Each command line in a ```bash block (also `.venv/bin/alaya ...` and `torchrun ... -m alaya.cli ...`) is cut at a
shell comment, pipe, redirection or `&`, split like a shell, and parsed by `alaya`'s own parser (arguments are not
run); each subcommand used also answers `--help`."""
import re
import shlex

import pytest

from alaya.cli import build_parser, with_default_action
from conftest import REPO

DOCS = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
_START = re.compile(r"(?:^|\s|\()(?:\.venv/bin/)?alaya\s|-m alaya\.cli\s")


def shown_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in _BLOCK.findall(text):
            lines = block.replace("\\\n", " ").splitlines()
            for line in lines:
                m = _START.search(line)
                if not m or line.lstrip().startswith("#"):
                    continue
                cmd = line[m.end():]
                cmd = re.split(r"\s#\s|\s\|\s|\s&&\s|\s&\s*$|\s&$|\s>\s|;\s", cmd + " ")[0].strip()
                found.append((f"{doc.relative_to(REPO)}: {line.strip()}", cmd))
    return found


COMMANDS = shown_commands()


def test_the_docs_show_commands_of_every_room():
    firsts = {shlex.split(c)[0] for _, c in COMMANDS}
    assert {"quickstart", "data", "tokenizer", "pretrain", "sft", "merge", "infer", "chat", "serve", "eval"} <= firsts
    assert len(DOCS) >= 11  # README + five guides in English + five in Chinese


@pytest.mark.parametrize("where,cmd", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_command_shown_parses(where, cmd):
    argv = with_default_action(build_parser(), shlex.split(cmd))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"{where}: does not parse (exit {e.code})") from None
    assert callable(args.func)


def test_every_subcommand_used_in_the_docs_answers_help(capsys):
    parser_paths = set()
    for _, cmd in COMMANDS:
        words = with_default_action(build_parser(), shlex.split(cmd))
        path = []
        for w in words:
            if w.startswith("-") or "=" in w or "/" in w or "." in w:
                break
            path.append(w)
            with pytest.raises(SystemExit) as e:
                build_parser().parse_args(path + ["--help"])
            if e.value.code != 0:
                path.pop()
                break
        parser_paths.add(tuple(path))
    assert len(parser_paths) >= 10
    capsys.readouterr()


def test_sft_without_an_action_is_sft_train_and_other_rooms_are_left_alone():
    parser = build_parser()
    assert with_default_action(parser, ["sft", "--config", "c.yaml", "lora.r=8"]) == ["sft", "train", "--config", "c.yaml", "lora.r=8"]
    for argv in (["sft", "identity", "--output", "x"], ["sft", "--help"], ["data", "tokenize"], ["sft"], []):
        assert with_default_action(parser, argv) == argv
