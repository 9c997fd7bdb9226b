"""Short final answers out of long texts: what `vote`, early exit and the eval scorers compare.

A panel answer is prose; two answers "agree" when the final answer they commit to is the same
once spelling is folded ("1,000" and "1000.0", "(b)" and "B."). `extract_answer` finds that final
answer, `normalise_answer` folds it, `answers_agree` compares a panel's worth.

`extract_code` takes the code out of a reply (its fenced blocks), for the code scorer and verify.

`how` says where the answer is: "auto" (a \\boxed{..}, else a marked "Answer: ..." / "the final
answer is ...", else a lone option letter the text picks, else the last number; code blocks are
not looked into, so code answers have none and a vote on them goes to the judge), "number",
"letter", "boxed", "marked" (a boxed or marked answer only: no guessing from the last number),
"regex:<pattern>" (group 1, else the whole match, of the first match) and "json:<field>" (a field
of the first JSON object in the text; a dotted path such as "result.items.0" is allowed).
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any

HOWS = ("auto", "number", "letter", "boxed", "marked")

_NUMBER = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+−]?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*(?:\d+))?(?![\w])")
_MARKED_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer|correct\s+(?:option|choice|answer))"
    r"\s*(?:is|:|=|would\s+be|will\s+be)\s*:?\s*(.+)",
    re.IGNORECASE,
)
_LETTER = r"[A-H]"
_LONE_LETTER_RE = re.compile(rf"^[\s*_`]*\(?({_LETTER})\)?[.):]?[\s*_`]*$", re.IGNORECASE)
_PICKED_LETTER_RE = re.compile(
    rf"(?:option|choice|answer(?:\s+is)?|choose|pick|select)\s*:?\s*\(?\**({_LETTER})\b\)?",
    re.IGNORECASE,
)
# "(b) Paris" in any case; "B. Paris" / "B) Paris" only upper case ("a. dog" is not option A).
_LEADING_LETTER_RE = re.compile(rf"^\(((?i:{_LETTER}))\)(?:\s|$)|^({_LETTER})[.):](?:\s|$)")
_UNIT_TAIL_RE = re.compile(r"^(.*?\d)\s*(?:%|[^\W\d_](?:[^\W\d_]|/)*(?:\s+[^\W\d_]+){0,2})\.?$")
_ASSIGN_RE = re.compile(r"^[a-z]\w{0,3}\s*=\s*(.+)$", re.IGNORECASE)


def check_how(how: str) -> None:
    """Raise ValueError when `how` is not a known way to extract an answer (a bad regex too)."""
    if how in HOWS:
        return
    if how.startswith("regex:"):
        try:
            re.compile(how.removeprefix("regex:"))
        except re.error as exc:
            raise ValueError(f"invalid regex in {how!r}: {exc}") from None
        return
    if how.startswith("json:") and how.removeprefix("json:").strip():
        return
    raise ValueError(
        f"unknown answer extraction {how!r}: use one of {', '.join(HOWS)}, regex:<pattern> "
        "or json:<field>"
    )


def extract_answer(text: str, how: str = "auto") -> str | None:
    """The final answer `text` commits to, as written (not normalised); None when it has none."""
    check_how(how)
    if not text or not text.strip():
        return None
    if how.startswith("regex:"):
        match = re.search(how.removeprefix("regex:"), text)
        if match is None:
            return None
        return (match.group(1) if match.groups() else match.group(0)).strip() or None
    if how.startswith("json:"):
        return _json_field(text, how.removeprefix("json:").strip())
    if how == "boxed":
        return _boxed(text)
    if how == "number":
        return _last_number(text)
    if how == "letter":
        return _letter(text)
    prose = _without_code(text)
    if not prose.strip():
        return None
    marked = _boxed(prose) or _marked(prose)
    if how == "marked" or marked is not None:
        return marked
    return _letter(prose) or _last_number(prose)


def _without_code(text: str) -> str:
    """`text` without its code blocks (labelled, or of several lines): a number inside code (the
    `% 26` of three different functions) is not an answer the text commits to."""

    def code_or_not(match: re.Match[str]) -> str:
        lang, body = match.group(1), match.group(2)
        return " " if lang or len([x for x in body.splitlines() if x.strip()]) > 1 else body

    return _FENCE_RE.sub(code_or_not, text)


def normalise_answer(answer: str) -> str:
    """Fold case, whitespace, trailing punctuation, number spelling and option-letter spelling."""
    text = _strip_markup(answer)
    letter = _LONE_LETTER_RE.match(text) or _LEADING_LETTER_RE.match(text)
    if letter:
        return next(g for g in letter.groups() if g).upper()
    folded = re.sub(r"\s+", " ", text).strip().rstrip(".,;:!?").strip().lower()
    number = _canonical_number(folded)
    return number if number is not None else folded


def answers_agree(texts: list[str], how: str = "auto") -> str | None:
    """The normalised answer every text gives, or the shared text when all are equal once
    whitespace and case are folded; None when they differ, or when there is no text at all."""
    if not texts:
        return None
    extracted = [extract_answer(t, how) for t in texts]
    if all(a is not None for a in extracted):
        normalised = {normalise_answer(a) for a in extracted if a is not None}
        if len(normalised) == 1 and "" not in normalised:
            return normalised.pop()
    folded = {re.sub(r"\s+", " ", t).strip().casefold() for t in texts}
    if len(folded) == 1 and "" not in folded:
        return normalise_answer(texts[0])
    return None


def _strip_markup(answer: str) -> str:
    """Markdown emphasis and the LaTeX that wraps a final answer ($..$, \\text{..}, \\frac)."""
    text = answer.strip()
    text = re.sub(r"\\(?:d|t)?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\%", "%").replace("\\$", "$").replace("^\\circ", "")
    text = re.sub(r"\\[,!;: ]", "", text)
    text = text.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    text = text.strip()
    while len(text) > 1 and text[0] == text[-1] and text[0] in "*_`$\"'":
        text = text[1:-1].strip()
    return text.strip("*_` ").strip()


def _canonical_number(text: str) -> str | None:
    """ "1,000" -> "1000", "2.50" -> "2.5", "$3" -> "3", "3 km" -> "3", "50%" -> "50",
    "1/2" -> "0.5", "x = 4" -> "4"; None when `text` is not one number."""
    assign = _ASSIGN_RE.match(text)
    if assign:
        text = assign.group(1).strip()
    text = re.sub(r"^(?:approximately|about|around|roughly|≈|~)\s*", "", text)
    text = re.sub(r"^([-+−]?)\s*(?:usd|eur|gbp|[$€£¥])\s*", r"\1", text)
    unit = _UNIT_TAIL_RE.match(text)
    if unit:
        text = unit.group(1)
    text = text.replace("−", "-").replace(" ", "")
    if not re.fullmatch(rf"(?:{_NUMBER})(?:/\d+)?", text):
        return None
    numerator, _, denominator = text.partition("/")
    try:
        value = Fraction(numerator.replace(",", ""))
        if denominator:
            value /= int(denominator)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.12g}"


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces allowed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip() or None
    return None


def _marked(text: str) -> str | None:
    """The rest of the last line that says "Answer: ..." or "the final answer is ..."."""
    found = None
    for line in text.splitlines():
        match = _MARKED_RE.search(line)
        if match:
            value = match.group(1).strip().lstrip("*_` ").rstrip("*_`. ")
            if value:
                found = value
    return found


_OPTION_LINE_RE = re.compile(rf"^[ \t]*\(?({_LETTER})[.)][ \t]+(\S.*?)[ \t]*$", re.MULTILINE)


def options_in(question: str) -> list[str]:
    """The options a question lists one per line ("A. Ag", "B) Au", "(C) Gd"), in letter order
    from A; empty when it lists fewer than two or skips a letter."""
    found = [(letter.upper(), text) for letter, text in _OPTION_LINE_RE.findall(question)]
    letters = [letter for letter, _ in found]
    if len(found) < 2 or letters != [chr(ord("A") + i) for i in range(len(found))]:
        return []
    return [text for _, text in found]


def named_option(answer: str, options: list[str]) -> str | None:
    """The letter of the one option whose text the answer names ("the symbol is Au" -> B of
    Ag/Au/Gd/Go); None when it names none or several."""
    folded = answer.casefold()
    named = [
        chr(ord("A") + i)
        for i, option in enumerate(options)
        if re.search(rf"(?<!\w){re.escape(option.casefold())}(?!\w)", folded)
    ]
    return named[0] if len(named) == 1 else None


def option_picked(answer: str, options: list[str]) -> str | None:
    """The option an answer to a multiple-choice question picks: the letter it gives, else the
    one option it names by its text (models often answer "79", or "Au", not "B")."""
    return _letter(_without_code(answer)) or named_option(answer, options)


def _letter(text: str) -> str | None:
    """An option letter the text picks: all of it ("(B)"), or named ("the answer is C")."""
    stripped = text.strip()
    lone = _LONE_LETTER_RE.match(stripped)
    if lone:
        return lone.group(1).upper()
    picked = _PICKED_LETTER_RE.findall(stripped)
    if picked:
        return picked[-1].upper()
    lead = _LEADING_LETTER_RE.match(stripped.splitlines()[0].strip())
    return next(g for g in lead.groups() if g).upper() if lead else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1].strip() if numbers else None


def _json_field(text: str, path: str) -> str | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return _dig(value, path)
    return None


def _dig(value: Any, path: str) -> str | None:
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif (
            isinstance(value, list)
            and key.lstrip("-").isdigit()
            and -len(value) <= int(key) < len(value)
        ):
            value = value[int(key)]
        else:
            return None
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return json.dumps(value, sort_keys=True)


_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LANGS = ("", "python", "py", "python3", "py3")


def extract_code(text: str) -> str:
    """The code of a reply: its Python (or unlabelled) fenced blocks joined, else every fenced
    block, else the whole text. An unclosed last fence (a reply cut by max_tokens) counts."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    chosen = [body for lang, body in blocks if lang in _PYTHON_LANGS] or [b for _, b in blocks]
    if not chosen:
        return text.strip("\n")
    return "\n\n".join(body.rstrip() for body in chosen) + "\n"
