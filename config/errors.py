"""Configuration problems, each pinned to a file and line so an operator can fix it at once."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        """`file:line: message`; a problem with no line (an environment variable) has none."""
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


class ConfigError(Exception):
    """One or more problems in a configuration file; str() lists them all, one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
