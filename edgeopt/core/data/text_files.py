"""Text files read into rows: ``.jsonl``, ``.csv``, ``.tsv`` (a ``text`` column, optional
``label`` and ``split``) and ``.txt`` (one text per line).

Each reader returns ``Row``s carrying the line they start on, so that ``text.py`` can name
the line of any problem it finds later (an unlabelled row among labelled ones).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from edgeopt.core.errors import DataError

TEXT_SUFFIXES = (".jsonl", ".csv", ".tsv", ".txt")

Label = int | str | None


@dataclass(frozen=True)
class Row:
    text: str
    label: Label
    split: str | None  # "train"/"test" where the file says, else None
    line: int  # 1-based line the row starts on


def read_text_file(path: Path) -> list[Row]:
    """The rows of a ``.jsonl``/``.csv``/``.tsv``/``.txt`` file; a one-line ``DataError``
    naming the file and line for anything malformed, and for a file with no rows."""
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path}: unsupported text file (expected .jsonl, .csv, .tsv or .txt)")
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, text, "\t" if suffix == ".tsv" else ",")
    else:
        rows = _txt_rows(text)
    if not rows:
        raise DataError(f"{path}: no texts in the file")
    return rows


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        # utf-8-sig: spreadsheets write a byte-order mark that would otherwise end up in the
        # first header name ("\ufefftext") and hide the text column.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it also breaks on U+2028, U+0085 and form feeds, which JSON
    # strings may hold raw, and would then misnumber every later line.
    return [line.removesuffix("\r") for line in text.split("\n")]


def _names(names) -> str:
    # A quoted header name or a JSON key may hold a newline: shown as repr, the error
    # stays one line.
    return ", ".join(n if n.isprintable() else repr(n) for n in names)


def _check_text(path: Path, line: int, text) -> str:
    if not isinstance(text, str):
        raise DataError(f"{path}:{line}: text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError(f"{path}:{line}: empty text")
    return text


def _check_split(path: Path, line: int, split) -> str | None:
    if split is None or split == "":
        return None
    if split not in ("train", "test"):
        raise DataError(f"{path}:{line}: split must be train or test, got {split!r}")
    return split


def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
        except RecursionError:  # json nests by recursion: "[[[[..." thousands deep
            raise DataError(f"{path}:{number}: not JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with a text field")
        if "text" not in obj:
            raise DataError(f"{path}:{number}: no text field (fields: {_names(obj) or 'none'})")
        label = obj.get("label")
        # bool is an int in Python; true/false as a class index is almost surely a mistake.
        if label is not None and (isinstance(label, bool) or not isinstance(label, int | str)):
            raise DataError(
                f"{path}:{number}: label must be an integer or a string, got {json.dumps(label)}"
            )
        rows.append(Row(_check_text(path, number, obj["text"]), label,
                        _check_split(path, number, obj.get("split")), number))
    return rows


def _csv_rows(path: Path, text: str, delimiter: str) -> list[Row]:
    # newline="" semantics (no translation): the csv module itself handles line ends,
    # including newlines inside quoted fields.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[Row] = []
    header: list[str] | None = None
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1  # a record may span several lines
            if not record:
                continue  # a blank line (a quoted "" is a field, and an empty text)
            if header is None:
                header = [name.strip() for name in record]
                columns = _columns(path, header)
                continue
            if len(record) != len(header):
                raise DataError(
                    f"{path}:{line}: {len(record)} fields but the header has {len(header)}"
                )
            text_, label, split = (None if i is None else record[i] for i in columns)
            rows.append(Row(_check_text(path, line, text_), _csv_label(label),
                            _check_split(path, line, split), line))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed {path.suffix[1:]} ({exc})") from None
    return rows


def _columns(path: Path, header: list[str]) -> tuple[int | None, int | None, int | None]:
    """Indices of the text, label and split columns (None where absent)."""
    if "text" not in header:
        raise DataError(f"{path}: no text column (columns: {_names(header)})")
    return tuple(header.index(c) if c in header else None for c in ("text", "label", "split"))


def _csv_label(field: str | None) -> Label:
    # csv has no types: a field of digits is a class index, anything else a class name.
    if field is None or field.strip() == "":
        return None
    field = field.strip()
    return int(field) if field.isascii() and field.isdigit() else field


def _txt_rows(text: str) -> list[Row]:
    return [Row(line, None, None, number)
            for number, line in enumerate(_lines(text), start=1) if line.strip()]
