"""The official scorers' rules, reproduced: which text each one executes and how it compares the results.

Published Spider numbers come from test-suite-sql-eval (``evaluation.py --etype exec``), published BIRD numbers
from BIRD's ``evaluation_ex.py``. Both do more than compare results, and ``finestep eval`` reproduces each rule
(written from reading their code; see docs/evaluation.md for the worked examples):

test-suite-sql-eval (``metric="spider"``), in its order:

1. the prediction is the text before the first tab of its stripped line (its file format is ``SQL<TAB>db_id``);
2. `` value `` (the placeholder some parsers emit, spaces on both sides) becomes `` 1 `` in the prediction;
3. ``> =``, ``< =`` and ``! =`` become ``>=``, ``<=`` and ``!=`` in both queries;
4. unless ``--keep_distinct``: every ``DISTINCT`` token is removed from both queries, ``count(DISTINCT x)``
   included, and only the first statement is kept (it tokenizes with ``sqlparse`` and takes ``parse(s)[0]``);
5. ``YEAR(CURDATE())`` becomes ``2020`` when executed;
6. both run as given (``sqlite3``: ``SELECT 1;;`` is an error, an empty text an empty result), stored text that
   is not UTF-8 loses its undecodable bytes;
7. results compare as bags under a column permutation, as lists when the gold query contains ``order by``,
   after a quick check that can reject an int/float mix (:func:`spider_quick_check`).

BIRD (``metric="bird"``): both queries run as given on a plain connection (an empty prediction gives an empty
result, so it is right when the gold result is empty; text that is not UTF-8 makes the query fail); the verdict is
``set(pred) == set(gold)``; any error is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finestep.sql.compare import bird_match, spider_match

__all__ = [
    "Scorer",
    "remove_distinct",
    "repair_operators",
    "replace_current_year",
    "spider_prediction_text",
    "spider_quick_check",
]

Row = tuple[Any, ...]

# One lexical token of SQL as sqlparse sees it for this purpose: a quoted string or identifier, a comment, a
# word, or any other single character. Only whole word tokens equal to DISTINCT are removed, so 'distinct' in a
# string, "distinct" as a quoted name and distinct_count as a column survive.
_TOKEN = re.compile(
    r"""'(?:''|\\.|[^'])*'"""  # single-quoted string
    r'''|"(?:""|\\.|[^"])*"'''  # double-quoted identifier or string
    r"""|`(?:``|[^`])*`"""  # backquoted identifier
    r"""|\[[^\]]*\]"""  # bracketed identifier
    r"""|--[^\r\n]*(?:\r\n|\r|\n)?"""  # line comment, with its line end
    r"""|/\*[\s\S]*?\*/"""  # block comment
    r"""|[@$#:]?\w+"""  # word, variable or placeholder
    r"""|[\s\S]""",  # anything else (an unterminated quote too), one character
)
# After the first statement's ';', sqlparse keeps the whitespace and line comments that follow in it.
_STATEMENT_TAIL = re.compile(r"(?:\s+|--[^\r\n]*(?:\r\n|\r|\n)?)*")
_CURRENT_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)


def remove_distinct(sql: str) -> str:
    """test-suite-sql-eval's default rewrite: drop every ``DISTINCT`` word token and keep the first statement.

    ``"SELECT count(DISTINCT state) FROM t"`` -> ``"SELECT count( state) FROM t"``; the statement ends after its
    first ``;`` outside quotes and comments, which stays (``"SELECT 1;; x"`` -> ``"SELECT 1;"``).
    """
    kept: list[str] = []
    for match in _TOKEN.finditer(sql):
        token = match.group()
        if token.lower() == "distinct":
            continue
        kept.append(token)
        if token == ";":
            tail = _STATEMENT_TAIL.match(sql, match.end())
            kept.append(tail.group() if tail else "")
            break
    return "".join(kept)


def repair_operators(sql: str) -> str:
    """test-suite-sql-eval's ``postprocess``: ``> =`` -> ``>=``, ``< =`` -> ``<=``, ``! =`` -> ``!=``."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def replace_current_year(sql: str) -> str:
    """test-suite-sql-eval's ``replace_cur_year``: ``YEAR(CURDATE())`` (any spacing or case) -> ``2020``."""
    return _CURRENT_YEAR.sub("2020", sql)


def spider_prediction_text(line: str) -> str:
    """What test-suite-sql-eval reads from a prediction line: the text before the first tab of the stripped
    line, with the placeholder `` value `` replaced by `` 1 ``."""
    return line.strip().split("\t")[0].replace(" value ", " 1 ")


def _unordered_row(row: Row) -> Row:
    return tuple(sorted(row, key=lambda value: str(value) + str(type(value))))


def spider_quick_check(gold_rows: Sequence[Row], pred_rows: Sequence[Row], order_matters: bool) -> bool:
    """test-suite-sql-eval's ``quick_rej``: rows with their values sorted by ``str(value) + str(type(value))``
    must agree (as sets, or as lists when order matters). A necessary condition of equal results, except that
    the sort key tells ``1`` from ``1.0``: ``(1.0, 1.5)`` sorts as is, ``(1, 1.5)`` as ``(1.5, 1)``."""
    gold_sorted = [_unordered_row(row) for row in gold_rows]
    pred_sorted = [_unordered_row(row) for row in pred_rows]
    return gold_sorted == pred_sorted if order_matters else set(gold_sorted) == set(pred_sorted)


@dataclass(frozen=True)
class Scorer:
    """One official scorer's rules: ``metric`` ``spider`` (test-suite-sql-eval) or ``bird``; ``keep_distinct``
    is test-suite-sql-eval's ``--keep_distinct`` (DISTINCT kept, the semantically faithful variant)."""

    metric: str = "bird"
    keep_distinct: bool = False

    def __post_init__(self) -> None:
        if self.metric not in ("spider", "bird"):
            raise ValueError(f"unknown metric {self.metric!r}; expected 'spider' or 'bird'")
        if self.keep_distinct and self.metric != "spider":
            raise ValueError("keep_distinct is an option of the spider metric (test-suite-sql-eval) only")

    @property
    def variant(self) -> str:
        """The official command this scorer reproduces, for reports."""
        if self.metric == "bird":
            return "BIRD evaluation_ex.py"
        if self.keep_distinct:
            return "test-suite-sql-eval --etype exec --keep_distinct"
        return "test-suite-sql-eval --etype exec (default: DISTINCT removed)"

    @property
    def text_errors(self) -> str:
        """How stored text that is not UTF-8 is decoded (``sqlite3`` text factory of the official script)."""
        return "ignore" if self.metric == "spider" else "strict"

    def queries(self, pred_sql: str, gold_sql: str) -> tuple[str, str]:
        """The texts the official scorer executes for this prediction and gold query."""
        if self.metric == "bird":
            return pred_sql, gold_sql
        pred, gold = repair_operators(spider_prediction_text(pred_sql)), repair_operators(gold_sql.strip())
        if not self.keep_distinct:
            pred, gold = remove_distinct(pred), remove_distinct(gold)
        return replace_current_year(pred), replace_current_year(gold)

    def match(self, pred_rows: Sequence[Row], gold_rows: Sequence[Row], gold_sql: str) -> bool:
        """The verdict on two results; ``gold_sql`` is the executed gold text (its ``order by`` matters)."""
        if self.metric == "bird":
            return bird_match(pred_rows, gold_rows)
        if not pred_rows and not gold_rows:
            return True
        order_matters = "order by" in gold_sql.lower()
        return spider_match(pred_rows, gold_rows, order_matters) and spider_quick_check(
            gold_rows, pred_rows, order_matters
        )
