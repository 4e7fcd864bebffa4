"""The one exception type users see: a message that says what is wrong and what to do."""

import textwrap


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


def brief(text: str, limit: int = 240) -> str:
    """Another library's (often multi-line) error text on one line of about `limit` characters, cut between
    words and marked with " ..." when it had to be cut, never in the middle of a word (a longer word stays whole)."""
    lines = textwrap.wrap(" ".join(str(text).split()), width=limit, break_long_words=False, break_on_hyphens=False)
    return lines[0] + (" ..." if len(lines) > 1 else "") if lines else ""


def require(extra: str, purpose: str, *modules: str) -> None:
    """Stop before any work when a module an optional feature needs is missing, naming the extra that installs it
    (a traceback halfway through, after files were written, would be the alternative)."""
    import importlib.util

    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise BertfitError(f"{purpose} needs {', '.join(missing)}: pip install 'bertfit[{extra}]'")
