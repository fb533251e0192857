"""README.md and docs/: every command they quote runs as written, and they stay short and free of history.

Each `python X.py ...`, `python -m M ...`, `make T` and `bash S` line in a fenced code block of README.md or
docs/*.md, and each `<!-- bench: COMMAND -->` line naming the command behind a quoted table, is checked against its
entry point without running it:
- a script or module (eval.py, visualize.py, bench/*.py, `-m fusion.cost`, ...) runs as `python` would run it
  (runpy, with sys.argv as quoted) until its argparse parser parses: the parse must accept every argument, and
  unknown flags fail (parse_known_args, then no leftovers);
- train.py (LightningCLI) runs with `--print_config` appended: jsonargparse checks the subcommand, every config file
  and every flag against the constructors' signatures, then prints and exits;
- `make T`: T is a target of the Makefile; `bash S`: S exists.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 320
PYTHONS = {"python", "python3", ".venv/bin/python"}
FENCE = re.compile(r"^```.*?$(.*?)^```", re.S | re.M)
BENCH_COMMENT = re.compile(r"<!--\s*bench:\s*(.*?)\s*-->", re.S)


def commands(text: str) -> list[str]:
    """The command lines quoted in `text`: fenced code blocks (continuation lines joined, `# comments` dropped) and
    `<!-- bench: ... -->` comments, for the lines that start with python, make or bash (after VAR=value and time)."""
    lines = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line for line in joined.splitlines()]
    lines += [" ".join(c.split()) for c in BENCH_COMMENT.findall(text)]
    out = []
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        while words and (re.fullmatch(r"[A-Z_]+=\S*", words[0]) or words[0] == "time"):
            words = words[1:]
        if words and (words[0] in PYTHONS or words[0] in ("make", "bash")):
            out.append(shlex.join(words))
    return out


def quoted() -> list[tuple[str, str]]:
    """(file, command) for every command README.md and docs/*.md quote, each distinct command once."""
    seen, out = set(), []
    for path in [README, *DOCS]:
        for command in commands(path.read_text()):
            if command not in seen:
                seen.add(command)
                out.append((path.name, command))
    return out


class Parsed(Exception):
    """Raised in place of returning from ArgumentParser.parse_args: the entry point stops once its flags parse."""


def strict_parse_args(self, args=None, namespace=None):
    """ArgumentParser.parse_args as parse_known_args, failing on leftovers, then stopping the entry point."""
    namespace, extras = self.parse_known_args(args, namespace)
    if extras:
        pytest.fail(f"unrecognized arguments: {' '.join(extras)}")
    raise Parsed(namespace)


def run_until_parsed(target: list[str], argv: list[str], monkeypatch) -> None:
    """Run `python TARGET ARGV` (TARGET: a script path or ["-m", module]) in this process until its argparse
    parser has parsed ARGV; fail where it rejects them, or returns or exits without parsing."""
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", strict_parse_args)
    monkeypatch.chdir(ROOT)
    if target[0] == "-m":
        monkeypatch.setattr(sys, "argv", [target[1], *argv])
        run = lambda: runpy.run_module(target[1], run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        assert (ROOT / target[0]).is_file(), f"{target[0]} does not exist"
        monkeypatch.setattr(sys, "argv", [target[0], *argv])
        run = lambda: runpy.run_path(str(ROOT / target[0]), run_name="__main__")  # noqa: E731
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            run()
    except Parsed:
        return
    except SystemExit as e:
        pytest.fail(f"exited with {e.code} before its arguments parsed: {err.getvalue().strip()[-600:]}")
    pytest.fail("ran to the end without parsing its arguments")


def check_train(argv: list[str], monkeypatch) -> None:
    """train.py ARGV --print_config: LightningCLI accepts the subcommand, configs and flags (exit 0)."""
    import train

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as e:
            train.main([*argv] if "--print_config" in argv else [*argv, "--print_config"])
    assert e.value.code in (0, None), f"train.py {shlex.join(argv)}: {err.getvalue().strip()[-800:]}"
    assert "model:" in out.getvalue()


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


COMMANDS = quoted()


def test_readme_quotes_the_two_commands():
    assert ("README.md", "make demo") in COMMANDS and ("README.md", "make test") in COMMANDS


@pytest.mark.parametrize("where,command", COMMANDS, ids=[c[:80] for _, c in COMMANDS])
def test_quoted_command_parses(where, command, monkeypatch):
    words = shlex.split(command)
    if words[0] == "make":
        missing = [w for w in words[1:] if "=" not in w and not w.startswith("-") and w not in make_targets()]
        assert not missing, f"{where}: make targets not in the Makefile: {missing}"
        return
    if words[0] == "bash":
        assert (ROOT / words[1]).is_file(), f"{where}: {words[1]} does not exist"
        return
    if words[1] == "-m":
        run_until_parsed(words[1:3], words[3:], monkeypatch)
    elif words[1] == "train.py":
        for i, w in enumerate(words):
            if w == "--config":
                assert (ROOT / words[i + 1]).is_file(), f"{where}: {words[i + 1]} does not exist"
        check_train(words[2:], monkeypatch)
    else:
        run_until_parsed(words[1:2], words[2:], monkeypatch)


def test_strict_parse_rejects_an_unknown_flag(monkeypatch):
    """The check itself: a flag the entry point does not know fails, one it knows passes."""
    with pytest.raises(pytest.fail.Exception):
        run_until_parsed(["visualize.py"], ["--run", "r", "--no-such-flag"], monkeypatch)
    run_until_parsed(["visualize.py"], ["--run", "r"], monkeypatch)


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): put the rest in docs/"


ISSUE_REF = re.compile(r"(?i)\bissue\s*#?\d+|(?<![\w&/])#\d+\b")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_no_issue_numbers_or_commit_hashes(path):
    text = path.read_text()
    assert not ISSUE_REF.findall(text), f"{path.name}: issue references {ISSUE_REF.findall(text)[:5]}"
    assert not COMMIT.findall(text), f"{path.name}: commit hashes {COMMIT.findall(text)[:5]}"


def test_docs_pictures_are_referenced():
    """Every picture in docs/ is shown by README.md or a docs page (a picture no page shows is deleted)."""
    text = "".join(p.read_text() for p in [README, *DOCS])
    unused = [p.name for p in (ROOT / "docs").glob("*.png") if p.name not in text]
    assert not unused, f"pictures in docs/ no page shows: {unused}"


def test_links_resolve():
    """Relative links of README.md and docs/*.md point at files that exist."""
    broken = []
    for path in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+://", target) and not (path.parent / target).exists():
                broken.append(f"{path.name}: {target}")
    assert not broken, broken
