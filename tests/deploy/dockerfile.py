"""Just enough Dockerfile parsing for the tests to run what an image would run: instructions per stage."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def env(self) -> dict[str, str]:
        """ENV KEY=VALUE pairs, later ones winning; `$VAR` references are left as written."""
        env: dict[str, str] = {}
        for value in self.args("ENV"):
            for pair in shlex.split(value):
                key, _, val = pair.partition("=")
                env[key] = val
        return env

    def exec_form(self, instruction: str) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD (a shell-form one fails here)."""
        (value,) = self.args(instruction)
        return json.loads(value)


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, each with its instructions; continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        name, _, value = (logical + line).partition(" ")
        logical = ""
        name = name.upper()
        if name == "FROM":
            words = value.split()
            stages.append(Stage(words[0], words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((name, value.strip()))
    return stages
