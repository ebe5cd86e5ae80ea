"""README.md runs as written: each output it shows (a code block without a language) is what the
last command of the shell block before it prints, run here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.test_cli import run

README = Path(__file__).resolve().parent.parent / "README.md"


def shown_outputs() -> list[tuple[str, str]]:
    blocks = re.findall(r"```(\w*)\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    pairs, command = [], None
    for language, body in blocks:
        if language == "sh":
            command = [line for line in body.splitlines() if line.strip()][-1].split("  #")[0].strip()
        elif not language:
            assert command is not None, "an output block with no command before it"
            pairs.append((command, body))
    return pairs


def test_every_output_readme_shows():
    pairs = shown_outputs()
    assert pairs  # the quick start's
    for command, shown in pairs:
        args = shlex.split(command)
        assert args[0] == "tellme", command
        out = run(*args[1:])
        assert out.returncode == 0, out.stderr
        assert out.stdout == shown, f"README.md shows other output for `{command}`:\n{out.stdout}"
