"""The one error type a user sees for bad input: which field, what is wrong, how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a recipe field, a missing or broken input, an unfinished stage),
    reported on one line: where, what is wrong, how to fix it.

    Not a ValueError on purpose: pydantic wraps ValueErrors raised in validators into its own
    multi-line report and loses the field name; this one passes through unchanged.
    """

    def __init__(self, field: str, problem: str, fix: str, source: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        self.source = source
        super().__init__(self.line())

    def __reduce__(self):  # survives a process pool (the default pickling would call UserError(line))
        return UserError, (self.field, self.problem, self.fix, self.source)

    def line(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.field}: {self.problem}; fix: {self.fix}"

    def with_source(self, source: str) -> "UserError":
        return UserError(self.field, self.problem, self.fix, source=source)
