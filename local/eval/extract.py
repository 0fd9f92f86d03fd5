"""Extraction quality on invoice2data-format folders: <name>.pdf beside
<name>.json (a list with one object, or the object) holding the expected
fields. Each PDF goes through the real parser (`DoclingParser`) and the
`HeuristicExtractor` as category "invoice"; each expected field present in
the JSON is compared after normalisation:

  invoice_number  spaces and a leading "#" dropped, case folded
  date            ISO 8601 (YYYY-MM-DD)
  amount          a decimal with two places (the extractor's `total`)
  currency        ISO 4217 code (symbols and words mapped: "$" -> USD)
"""

from __future__ import annotations

import json
import re
import time
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

from doclane.functions.errors import ConfigError

# expected field -> the extractor's field of category "invoice"
FIELDS = {"invoice_number": "invoice_number", "date": "date", "amount": "total", "currency": "currency"}
SUFFIXES = (".pdf", ".txt", ".docx", ".html", ".eml")


def cases(folder: Path) -> list[tuple[Path, dict]]:
    """(document, expected fields) for every document with a JSON beside it."""
    folder = Path(folder)
    out = []
    for expected in sorted(folder.glob("*.json")):
        doc = next((expected.with_suffix(s) for s in SUFFIXES if expected.with_suffix(s).is_file()), None)
        if doc is None:
            continue
        obj = json.loads(expected.read_text(encoding="utf-8"))
        obj = obj[0] if isinstance(obj, list) and obj else obj
        if not isinstance(obj, dict):
            raise ConfigError(f"{expected}: expected an object (or a list holding one) of fields")
        out.append((doc, obj))
    if not out:
        raise ConfigError(f"{folder} has no document with an expected-fields JSON beside it (<name>.pdf + <name>.json)")
    return out


def evaluate(folder: Path, *, parser=None, progress: Callable[[str], None] = print) -> dict:
    from doclane.functions.adapters.docling_parser import DoclingParser
    from doclane.functions.adapters.heuristic_extractor import HeuristicExtractor

    todo = cases(folder)
    own = parser is None
    parser = parser or DoclingParser()
    extractor = HeuristicExtractor()
    per_field = {name: [0, 0] for name in FIELDS}  # right, judged
    documents = []
    try:
        for path, expected in todo:
            t0 = time.perf_counter()
            doc = parser.parse(path.read_bytes(), path.name)
            found = extractor.extract(doc, "invoice")
            row: dict[str, Any] = {"document": path.name, "seconds": round(time.perf_counter() - t0, 3), "fields": {}}
            for name, ours in FIELDS.items():
                want = _expected(expected, name)
                if want is None:
                    continue
                got = found[ours].value if ours in found else None
                ok = normalise(name, got) is not None and normalise(name, got) == normalise(name, want)
                per_field[name][0] += ok
                per_field[name][1] += 1
                row["fields"][name] = {"expected": want, "got": got, "ok": ok}
            documents.append(row)
            progress(f"{path.name}: " + ", ".join(f"{k} {'ok' if v['ok'] else 'WRONG'}" for k, v in row["fields"].items()))
    finally:
        if own:
            parser.close()
    right = sum(r for r, _ in per_field.values())
    judged = sum(n for _, n in per_field.values())
    return {
        "dataset": str(folder), "documents": len(documents),
        "fields": {k: {"accuracy": r / n if n else None, "right": r, "judged": n} for k, (r, n) in per_field.items()},
        "overall": right / judged if judged else None,
        "all_right_documents": sum(all(f["ok"] for f in d["fields"].values()) for d in documents),
        "details": documents,
    }


def _expected(obj: dict, name: str) -> Any:
    if name == "currency":
        return obj.get("currency") or obj.get("currency_symbol")
    return obj.get(name)


def normalise(name: str, value: Any) -> Any:
    """The comparable form of a value, or None when it has none."""
    if value in (None, "", []):
        return None
    if name == "date":
        return _iso_date(value)
    if name == "amount":
        return _decimal(value)
    if name == "currency":
        from doclane.functions.adapters.heuristic_extractor import currency_code

        return currency_code(str(value)) or str(value).strip().upper()
    return re.sub(r"\s+", "", str(value)).lstrip("#").casefold()


def _iso_date(value: Any) -> str | None:
    if isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m-%d")
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        import dateparser

        parsed = dateparser.parse(text, settings={"PREFER_DAY_OF_MONTH": "first"})
        return parsed.date().isoformat() if parsed else None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, dict):  # {"amount": ..., "currency": ...} shapes
        value = value.get("amount", value.get("value"))
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        from price_parser import Price

        amount = Price.fromstring(str(value)).amount
        return amount.quantize(Decimal("0.01")) if amount is not None else None


def render(report: dict) -> str:
    lines = [f"{report['dataset']}: {report['documents']} documents, "
             f"{report['all_right_documents']} with every field right",
             f"{'field':<16}{'accuracy':>9}{'right':>7}"]
    for name, f in report["fields"].items():
        acc = "-" if f["accuracy"] is None else f"{f['accuracy']:.3f}"
        lines.append(f"{name:<16}{acc:>9}{f['right']:>4}/{f['judged']}")
    overall = "-" if report["overall"] is None else f"{report['overall']:.3f}"
    lines.append(f"{'overall':<16}{overall:>9}")
    for d in report["details"]:
        for name, f in d["fields"].items():
            if not f["ok"]:
                lines.append(f"  {d['document']} {name}: expected {f['expected']!r}, got {f['got']!r}")
    return "\n".join(lines)
