"""The one exception type users see: a message that says what is wrong and what to do."""


class BertfitError(Exception):
    """Bad input or a refused action. The CLI prints the message and exits with code 2.

    Messages name the file, row or field at fault and say how to fix it; they never need a
    traceback to be understood.
    """


class ConfigError(BertfitError):
    """One or more config fields are wrong; the message lists every problem at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid config ({len(problems)} problem(s)):\n{lines}")
