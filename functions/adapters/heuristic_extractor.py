"""Extractor without a generative model: labelled values found by layout
proximity, in several languages, checked for plausibility.

Why labels and not templates: a vendor template breaks on the next vendor,
whereas "the date right of (or below) 'Rechnungsdatum'" holds for most
invoices. A label owns the value nearest to it on its reading path (same line
to its right, else the start of the next lines, else just above) and each
value is owned by one label only, so "Order Date" takes its date away from
"Invoice Date" and "Kundennr." its number away from "Rechnungsnr.".

Lines come from Docling's item boxes when the parser kept them (rows rebuilt
by position, because PDF content-stream order often puts a value far from its
label), else from the plain text. Confidence reflects the evidence: a value
next to a specific label > next to a generic one > an unlabelled guess.
"""

from __future__ import annotations

import email.utils
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import dateparser
from price_parser import Price

from doclane.functions import categories as categories_mod
from doclane.functions.ports import Field_, ParsedDocument

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- labels
_I = re.IGNORECASE
LABELS: dict[str, re.Pattern[str]] = {k: re.compile(v, _I) for k, v in {
    "invoice_no": r"invoice\s*(?:number|no\b\.?|nr\b\.?|num\b\.?|#|n°|id\b)|inv\.?\s*no\b\.?|bill\s*(?:no\b|number)"
                  r"|factuur\s*(?:nummer|nr\b\.?|no\b\.?)|facture\s*(?:n°|no\b\.?|num[ée]ro)|num[ée]ro\s*de\s*facture"
                  r"|n°\s*de\s*facture|rechnungs\s*(?:nummer|nr\b\.?)|rechnung\s*nr\b\.?|numer\s*faktury"
                  r"|faktura\s*(?:vat\s*)?nr\b\.?|fattura\s*n\b\.?|n[úu]mero\s*de\s*factura|factura\s*n[°ºo]",
    "invoice_weak": r"\b(?:tax\s+)?(?:invoice|factuur|facture|rechnung|faktura|fattura|factura)\b",
    "order_no": r"order\s*(?:id\b|number|no\b\.?|nr\b\.?|#)|purchase\s*order(?:\s*(?:number|no\b\.?))?|\bpo\s*(?:number|no\b\.?|#)"
                r"|ordernummer|bestell\s*(?:nummer|nr\b\.?)|auftragsnr\b\.?|(?:num[ée]ro\s*de\s*)?commande(?:\s*n°)?|numer\s*zam[óo]wienia",
    # Competitors: they exist only to claim the numbers that are not invoice/order numbers.
    "other_no": r"customer\s*(?:number|no\b\.?|id\b)|account\s*(?:number|no\b\.?)|client\s*(?:id\b|number|no\b)|id\.?\s*client"
                r"|kunden\s*(?:nummer|nr\b\.?)|klant\s*nummer|contract\s*no\b\.?|vertrags?\s*nr\b\.?|reference|referentie"
                r"|r[ée]f[ée]rence|num[ée]ro\s*de\s*ligne|serie\s*nummer|serial|phone|tel\b\.?|fax\b|kvk|siret|siren"
                r"|steuer-?\s*nr\b\.?|tax\s*#|vat/tin|service\s*tax|page|seite",
    "invoice_date": r"invoice\s*date|date\s*of\s*invoice|bill\s*date|date\s*of\s*issue|issue\s*date|factuurdatum"
                    r"|date\s*de\s*(?:la\s*)?facture|rechnungsdatum|data\s*(?:wystawienia|faktury)|fecha\s*de\s*factura",
    "due_date": r"due\s*date|payment\s*due|date\s*due|vervaldatum|uiterste\s*betaaldatum|date\s*limite\s*de\s*paiement"
                r"|[ée]ch[ée]ance|zahlungsziel|f[äa]llig(?:keitsdatum)?|termin\s*p[łl]atno[śs]ci",
    "other_date": r"order\s*date|orderdatum|bestelldatum|date\s*de\s*commande|delivery\s*date|leverdatum|lieferdatum"
                  r"|ship(?:ping)?\s*date|date\s*de\s*livraison|pr[ée]l[èe]vement\s*[àa]\s*partir\s*du",
    "date": r"\b(?:date|datum|dated|data)\b",
}.items()}
TOTAL_STRONG = re.compile(
    r"grand\s*total|total\s*(?:amount\s*)?due|amount\s*due|balance\s*due|total\s*ttc|somme\s*[àa]\s*payer|net\s*[àa]\s*payer"
    r"|total\s*[àa]\s*payer|total\s*for\s*this\s*invoice|invoice\s*total|total\s*facture|te\s*betalen|totaalbedrag"
    r"|gesamtbetrag|rechnungsbetrag|endbetrag|zu\s*zahlen|do\s*zap[łl]aty|total\s*incl", _I)
TOTAL_WEAK = re.compile(r"\b(?:total|totaal|totale|summe|razem|betrag)\b", _I)
NOT_TOTAL = re.compile(r"sub\s*-?\s*tota|zwischensumme|\btotal\s*(?:ht|excl|net|tax|vat|tva|btw|mwst)\b|exclusi|hors\s*taxe|\bht\b", _I)
SEP = r"(?:[\s:#.\-–|/]|\b(?:le|du|on|am|op|of|vom|den|dated?)\b)*"
_SEP_ONLY = re.compile(rf"^{SEP}$", _I)
_LINE_START = re.compile(rf"^{SEP}", _I)

# --------------------------------------------------------------------------- value shapes
_MONTHISH = r"[^\W\d_]{3,10}\.?"
DATE_RX = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})\b"
    rf"|\b\d{{1,2}}(?:st|nd|rd|th|er|\.)?\s+{_MONTHISH}\s+\d{{4}}\b|\b{_MONTHISH}\s+\d{{1,2}}(?:st|nd|rd|th)?\s*,?\s*\d{{4}}\b")
DATE_LANGS = ["en", "nl", "fr", "de", "pl", "es", "it", "pt"]
CURRENCY_SIGNS = {"€": "EUR", "$": "USD", "us$": "USD", "£": "GBP", "₹": "INR", "rs": "INR", "rs.": "INR", "inr": "INR",
                  "zł": "PLN", "zl": "PLN", "¥": "JPY", "chf": "CHF", "fr.": "CHF", "kr": "SEK", "r$": "BRL",
                  "euro": "EUR", "euros": "EUR", "dollar": "USD", "dollars": "USD", "us dollars": "USD", "rupees": "INR"}
_CUR = (r"(?:US\$|R\$|[€$£₹¥]|Rs\.?|zł|\b(?:EUR|USD|GBP|INR|PLN|CHF|JPY|CNY|SEK|NOK|DKK|CZK|HUF|RON|BGN|AUD|CAD|NZD"
        r"|BRL|MXN|ZAR|TRY|HKD|SGD|AED|SAR)\b)")
_NUM = r"-?(?:\d{1,3}(?:[.,'\u00a0\u202f]\d{3})+|\d+)(?:[.,]\d{2})"
AMOUNT_RX = re.compile(rf"(?:{_CUR}\s{{0,2}})?(?<![\w.,]){_NUM}(?![\d%])(?:\s{{0,2}}{_CUR})?|{_CUR}\s?-?\d+(?![\d.,%])")
EMAIL_RX = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
IBAN_RX = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){10,32}")
VAT_RX = re.compile(r"\b(?:AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|XI)"
                    r"[ .-]?[0-9A-Z](?:[ .]?[0-9A-Z]){7,13}\b|\b\d{2}[A-Z]{5}\d{4}[A-Z][1-9A-Z]Z[0-9A-Z]\b")
ID_RX = re.compile(r"(?<![\w/])[A-Za-z0-9][\w/.\-]*\d[\w/.\-]*")
COMPANY_RX = re.compile(r"\b(?:Inc|Ltd|LLC|GmbH|AG|B\.?V|N\.?V|SAS|SARL|S\.?A|S\.?p\.?A|Pvt|Limited|plc|Corp|Co|KG|Sp\. z o\.o)\b\.?", _I)


@dataclass(frozen=True)
class Hit:
    """A candidate value on a line."""
    line: int
    start: int
    end: int
    value: Any
    raw: str


# --------------------------------------------------------------------------- the adapter
class HeuristicExtractor:
    """Extractor port: fills each field of the category's schema that it can find."""

    name = "heuristic"

    def __init__(self, categories: categories_mod.Categories | None = None):
        self.categories = categories or categories_mod.load()

    def extract(self, doc: ParsedDocument, category: str) -> dict[str, Field_]:
        try:
            cat = self.categories.get(category)
        except KeyError:
            cat = self.categories.get(categories_mod.OTHER)
        page = Page(doc)
        out: dict[str, Field_] = {}
        for spec in cat.fields:
            finder = FINDERS.get((category, spec.name)) or FINDERS.get(("*", spec.name)) or TYPE_FINDERS.get(spec.type)
            try:
                found = finder(page) if finder else _labelled_string(page, spec.name)
            except Exception:  # odd text must never fail a document: log and leave the field out
                log.exception("extracting %s.%s failed", category, spec.name)
                continue
            if found is not None and found.value not in (None, "", []):
                out[spec.name] = found
        return out


class Page:
    """The document as lines plus the value candidates every finder shares."""

    def __init__(self, doc: ParsedDocument):
        self.doc = doc
        self.meta = {str(k).lower(): v for k, v in (doc.meta or {}).items()}
        try:
            layout = layout_lines(doc.docling) if doc.docling else None
        except (TypeError, ValueError, AttributeError, KeyError):  # a Docling dict of another shape: use the text
            log.warning("could not rebuild rows from the Docling document; reading the plain text")
            layout = None
        self.lines = [ln.strip() for ln in (layout or (doc.text or doc.markdown or "").splitlines())]
        self.text = "\n".join(self.lines)

    @cached_property
    def dates(self) -> list[list[Hit]]:
        us = self.currency_votes.get("USD", 0) > sum(self.currency_votes.values()) / 2
        return [[h for m in DATE_RX.finditer(ln) if (h := _date_hit(i, m, us))] for i, ln in enumerate(self.lines)]

    @cached_property
    def amounts(self) -> list[list[Hit]]:
        # Dates are blanked first: "20.10.15" is not the amount 20.10.
        return [[h for m in AMOUNT_RX.finditer(_blank(ln, self.dates[i])) if (h := _amount_hit(i, m))]
                for i, ln in enumerate(self.lines)]

    @cached_property
    def ids(self) -> list[list[Hit]]:
        out = []
        for i, ln in enumerate(self.lines):
            blank = _blank(ln, [*self.dates[i], *self.amounts[i]])
            out.append([Hit(i, m.start(), m.end(), m.group().rstrip(".-/"), m.group()) for m in ID_RX.finditer(blank)
                        if sum(c.isdigit() for c in m.group()) >= 2 and not blank[m.end():m.end() + 1] == "%"])
        return out

    @cached_property
    def currency_votes(self) -> dict[str, int]:
        votes: dict[str, int] = {}
        for m in AMOUNT_RX.finditer(self.text):
            if code := currency_code(Price.fromstring(m.group()).currency):
                votes[code] = votes.get(code, 0) + 1
        for m in re.finditer(r"\b(?:in|en)\s+(US dollars|dollars|euros?|rupees)\b", self.text, _I):
            code = currency_code(m.group(1))
            votes[code] = votes.get(code, 0) + 3  # "All prices are in US Dollars" is explicit
        return votes

    @cached_property
    def claims(self) -> dict[str, Hit]:
        """Label kind -> the value it owns, for numbers and dates alike."""
        ids = pair(self, ("invoice_no", "invoice_weak", "order_no", "other_no"), self.ids)
        dates = pair(self, ("invoice_date", "due_date", "other_date", "date", "invoice_weak"), self.dates)
        return {**{k: v for k, v in ids.items()}, **{f"{k}@date": v for k, v in dates.items()}}


def pair(page: Page, kinds: tuple[str, ...], cands: list[list[Hit]]) -> dict[str, Hit]:
    """Greedy label/value matching by reading distance: same line right of the
    label (0), start of one of the next two lines (1-2), start of one of the
    two lines above (3-4). Each label and each value is used once."""
    options: list[tuple[float, int, tuple[int, int], str, Hit]] = []
    for i, line in enumerate(page.lines):
        taken: list[tuple[int, int]] = []
        for rank, kind in enumerate(kinds):
            for m in LABELS[kind].finditer(line):
                if any(s < m.end() and m.start() < e for s, e in taken):
                    continue  # "Invoice Date" is not also a weak "Invoice" label
                taken.append(m.span())
                near = [(0.0, h) for h in cands[i] if h.start >= m.end() and _SEP_ONLY.match(line[m.end():h.start])]
                if kind != "invoice_weak":
                    for d, j in ((1, i + 1), (2, i + 2), (3, i - 1), (4, i - 2)):
                        if 0 <= j < len(page.lines) and not (j < i and LABELS[kind].search(page.lines[j])):
                            near += [(float(d), h) for h in cands[j][:1] if h.start == _LINE_START.match(page.lines[j]).end()]
                options += [(d, rank, (i, m.start()), kind, h) for d, h in near]
    used_labels, used_values, out = set(), set(), {}
    for d, _, label, kind, hit in sorted(options, key=lambda o: (o[0], o[1])):
        if label in used_labels or (hit.line, hit.start) in used_values:
            continue
        used_labels.add(label)
        used_values.add((hit.line, hit.start))
        out.setdefault(kind, hit)
    return out


# --------------------------------------------------------------------------- value parsing
def _date_hit(line: int, m: re.Match[str], us_first: bool) -> Hit | None:
    raw = m.group()
    nums = [int(x) for x in re.findall(r"\d+", raw)]
    order = "YMD" if re.match(r"\d{4}-", raw) else "DMY"
    if re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", raw):
        # Day first unless the numbers say otherwise, or the money is dollars and they allow it.
        order = "MDY" if nums[1] > 12 or (us_first and nums[0] <= 12 and "/" in raw) else "DMY"
    settings = {"DATE_ORDER": order, "PREFER_DAY_OF_MONTH": "first", "REQUIRE_PARTS": ["day", "month", "year"]}
    try:
        parsed = dateparser.parse(raw, languages=DATE_LANGS, settings=settings)
    except Exception:
        return None
    if parsed is None or not 1900 <= parsed.year <= 2100:
        return None
    return Hit(line, m.start(), m.end(), parsed.date().isoformat(), raw)


def _amount_hit(line: int, m: re.Match[str]) -> Hit | None:
    raw = m.group().strip()
    price = Price.fromstring(raw)
    if price.amount is None:
        return None
    value = -price.amount if re.search(r"-\s?\d", raw) else price.amount
    return Hit(line, m.start(), m.end(), (f"{value:.2f}", currency_code(price.currency)), raw)


def currency_code(symbol: str | None) -> str | None:
    """ISO 4217 code of a symbol, abbreviation, word or code."""
    if not symbol:
        return None
    s = symbol.strip().lower()
    if s in CURRENCY_SIGNS:
        return CURRENCY_SIGNS[s]
    if re.fullmatch(r"[A-Z]{3}", symbol.strip()):
        import pycountry
        return symbol.strip() if pycountry.currencies.get(alpha_3=symbol.strip()) else None
    return None


def _blank(line: str, hits: list[Hit]) -> str:
    """The line with the given spans replaced by spaces (offsets kept)."""
    chars = list(line)
    for h in hits:
        chars[h.start:h.end] = " " * (h.end - h.start)
    return "".join(chars)


def layout_lines(docling: dict) -> list[str] | None:
    """Rows rebuilt from Docling item boxes: items whose vertical centres fall
    inside each other's extent are one row, read left to right."""
    boxed = [(prov.get("page_no", 1), prov.get("bbox") or {}, it.get("text") or "")
             for it in docling.get("texts") or [] for prov in (it.get("prov") or [])[:1]]
    for table in docling.get("tables") or []:  # table cells carry their own boxes, on the table's page
        page_no = next((p.get("page_no", 1) for p in table.get("prov") or []), 1)
        boxed += [(page_no, cell.get("bbox") or {}, cell.get("text") or "")
                  for cell in (table.get("data") or {}).get("table_cells") or []]
    items = []
    for page_no, b, text in boxed:
        if {"l", "t", "r", "b"} <= b.keys() and text.strip():
            flip = 1 if str(b.get("coord_origin", "BOTTOMLEFT")).upper().startswith("BOTTOM") else -1
            top, bottom = sorted((flip * float(b["t"]), flip * float(b["b"])), reverse=True)
            items.append((page_no, top, bottom, float(b["l"]), text.replace("\n", " ")))
    if not items:
        return None
    rows: list[list[tuple]] = []
    for item in sorted(items, key=lambda x: (x[0], -x[1], x[3])):
        page, top, bottom, _, _ = item
        mid = (top + bottom) / 2
        row = next((r for r in rows[-6:] if r[0][0] == page and r[0][2] <= mid <= r[0][1]
                    and bottom <= (r[0][1] + r[0][2]) / 2 <= top), None)
        if row is None:
            rows.append([item])
        else:
            row.append(item)
    return ["  ".join(x[4] for x in sorted(r, key=lambda x: x[3])) for r in rows]


# --------------------------------------------------------------------------- finders
LABELS.update({k: re.compile(v, _I) for k, v in {
    "effective_date": r"effective\s*date|commencement\s*date|\bas\s*of\b|\bdated\b|ingangsdatum|date\s*d'effet|in\s*kraft\s*ab",
    "end_date": r"expir\w*|end\s*date|\buntil\b|termination\s*date|einddatum|\bbis\s*zum\b|date\s*de\s*fin",
}.items()})
ISSUER_RX = re.compile(r"\b(?:sold\s*by|seller|supplier|vendor|service\s*provider|issued\s*by|billed\s*by|verk[äa]ufer"
                       r"|leverancier|fournisseur|vendeur|sprzedawca)\b", _I)
RECIPIENT_RX = re.compile(r"^(?:bill(?:ed)?\s*to|invoice\s*to|billing\s*address|sold\s*to|factuuradres|rechnungsempf[äa]nger"
                          r"|adresse\s*de\s*facturation|nabywca)\b|^(?:customer|client|kunde)\s*:", _I)
CLOSING_RX = re.compile(r"^(?:yours\s+(?:sincerely|faithfully|truly)|sincerely(?:\s+yours)?|(?:kind|best|warm)\s+regards|regards"
                        r"|best\s+wishes|with\s+(?:all\s+my\s+)?love|met\s+vriendelijke\s+groet(?:en)?|mit\s+freundlichen\s+gr[üu](?:ß|ss)en"
                        r"|cordialement|bien\s+[àa]\s+vous|hochachtungsvoll|z\s+powa[żz]aniem)\b[\s,.!]*(.*)$", _I)
PAYMENT_WORDS = {"visa": "card", "mastercard": "card", "maestro": "card", "amex": "card", "card": "card", "karte": "card",
                 "carte": "card", "pin": "card", "cash": "cash", "contant": "cash", "bar": "cash", "espèces": "cash",
                 "ideal": "iDEAL", "paypal": "PayPal", "bank transfer": "bank transfer", "überweisung": "bank transfer"}


def _ctx(page: Page, hit: Hit) -> str:
    return page.lines[hit.line][:200]


def invoice_number(p: Page) -> Field_ | None:
    for kind, conf in (("invoice_no", 0.9), ("invoice_weak", 0.6)):
        if h := p.claims.get(kind):
            return Field_(h.value.lstrip("#"), conf, _ctx(p, h))
    return None


def order_number(p: Page) -> Field_ | None:
    h = p.claims.get("order_no")
    return Field_(h.value.lstrip("#"), 0.85, _ctx(p, h)) if h else None


def issue_date(p: Page) -> Field_ | None:
    if p.meta.get("date"):
        if found := _header_date(p.meta["date"]):
            return found
    for kind, conf in (("invoice_date", 0.9), ("invoice_weak", 0.6), ("date", 0.55)):
        if h := p.claims.get(f"{kind}@date"):
            return Field_(h.value, conf, _ctx(p, h))
    owned = {(h.line, h.start) for h in p.claims.values()}
    free = [h for row in p.dates for h in row if (h.line, h.start) not in owned]
    if (number := p.claims.get("invoice_no")) and (same := [h for h in free if h.line == number.line]):
        return Field_(same[0].value, 0.6, _ctx(p, same[0]))  # "Facture n°562044387 du 02 Juillet 2015"
    return Field_(free[0].value, 0.3, _ctx(p, free[0])) if free else None


def _claimed_date(kind: str, conf: float) -> Callable[[Page], Field_ | None]:
    def find(p: Page) -> Field_ | None:
        h = pair(p, (kind, "date", "other_date"), p.dates).get(kind)
        return Field_(h.value, conf, _ctx(p, h)) if h else None
    return find


def _total_hit(p: Page) -> tuple[Hit, float] | None:
    """The amount right of (or below) a total label; the largest such, since
    subtotals and per-line totals are smaller than the grand total."""
    found: list[tuple[Hit, int]] = []
    for i, ln in enumerate(p.lines):
        m = TOTAL_STRONG.search(ln) or (None if NOT_TOTAL.search(ln) else TOTAL_WEAK.search(ln))
        if not m:
            continue
        strength = 2 if m.re is TOTAL_STRONG else 1
        after = [h for h in p.amounts[i] if h.start >= m.end()]
        below = next((p.amounts[j][:1] for j in (i + 1, i + 2) if j < len(p.lines) and p.amounts[j]), [])
        if pick := (after[-1:] or below):
            found.append((pick[0], strength))
    if not found:
        return None
    best = max(found, key=lambda f: (float(f[0].value[0]), f[1]))
    support = [s for h, s in found if h.value[0] == best[0].value[0]]
    return best[0], 0.9 if max(support) == 2 or len(support) > 1 else 0.75


def total(p: Page) -> Field_ | None:
    if found := _total_hit(p):
        return Field_(found[0].value[0], found[1], _ctx(p, found[0]))
    money = [h for row in p.amounts for h in row if h.value[1]]
    if money:
        h = max(money, key=lambda h: float(h.value[0]))
        return Field_(h.value[0], 0.3, _ctx(p, h))
    return None


def currency(p: Page) -> Field_ | None:
    found = _total_hit(p)
    if found and found[0].value[1]:
        return Field_(found[0].value[1], 0.9, found[0].raw)
    if p.currency_votes:
        code, n = max(p.currency_votes.items(), key=lambda kv: kv[1])
        return Field_(code, min(0.85, 0.5 + 0.1 * n), code)
    return None


def emails(p: Page) -> Field_ | None:
    found = list(dict.fromkeys(m.group().rstrip(".") for m in EMAIL_RX.finditer(p.text)))
    return Field_(found, 0.9, ", ".join(found)) if found else None


def first_email(p: Page) -> Field_ | None:
    if p.meta.get("from") and (addr := email.utils.parseaddr(str(p.meta["from"]))[1]):
        return Field_(addr, 0.95, str(p.meta["from"]))
    m = re.search(r"^from\s*:\s*(.*)$", p.text, _I | re.M)
    found = EMAIL_RX.search(m.group(1)) if m else EMAIL_RX.search(p.text)
    return Field_(found.group(), 0.8 if m else 0.4, (m or found).group()) if found else None


def iban(p: Page) -> Field_ | None:
    from schwifty import IBAN
    for m in IBAN_RX.finditer(p.text):
        parts = m.group().split(" ")
        for n in range(len(parts), 0, -1):  # the pattern may run into the next word
            try:
                return Field_(IBAN("".join(parts[:n])).compact, 0.95, m.group())
            except Exception:
                continue
    return None


def vat_id(p: Page) -> Field_ | None:
    from stdnum.eu import vat
    from stdnum.in_ import gstin
    for m in VAT_RX.finditer(p.text):
        parts = re.split(r"[ .]", m.group())
        for n in range(len(parts), 0, -1):
            candidate = re.sub(r"[^0-9A-Z]", "", "".join(parts[:n]))
            if vat.is_valid(candidate) or gstin.is_valid(candidate):
                return Field_(candidate, 0.9, m.group())
    return None


def _party_after(p: Page, rx: re.Pattern[str]) -> tuple[str, str] | None:
    """The name right of a label, or on the first useful line below it."""
    for i, ln in enumerate(p.lines):
        if not (m := rx.search(ln)):
            continue
        for cand in [ln[m.end():], *p.lines[i + 1:i + 4]]:
            name = re.sub(r"^[\s:,-]*(?:address\s*:?)?\s*(?:attn\s*:?)?\s*", "", cand, flags=_I).strip(" ,:;")
            if re.search(r"[^\W\d_]{2}", name) and not name.startswith("(") and len(name) <= 80:
                return name, ln
    return None


def issuer(p: Page) -> Field_ | None:
    if found := _party_after(p, ISSUER_RX):
        return Field_(found[0], 0.8, found[1])
    rec = recipient(p)
    names: dict[str, int] = {}
    for m in re.finditer(rf"[A-Z][\w&'.-]*(?:[ ][A-Z0-9][\w&'.-]*){{0,4}},?[ ]{COMPANY_RX.pattern}", p.text):
        name = m.group().strip()
        if not rec or rec.value not in name:
            names[name] = names.get(name, 0) + 1 + (m.start() < 400)
    if names:
        name = max(names, key=names.get)
        return Field_(name, 0.6, name)
    return _top_line(p, 0.3)


def recipient(p: Page) -> Field_ | None:
    if found := _party_after(p, RECIPIENT_RX):
        return Field_(found[0], 0.75, found[1])
    return addressee(p)


def addressee(p: Page) -> Field_ | None:
    """Whom a letter greets ("Dear Ms Smith,"), else its To header."""
    for ln in p.lines:
        if m := re.match(r"(?:dear|geachte|sehr\s+geehrte[rs]?|cher|ch[èe]re|liebe[rs]?|beste)\s+(.+?)[,:!]?$", ln, _I):
            return Field_(m.group(1).strip(), 0.7, ln)
    if p.meta.get("to"):
        return Field_(str(p.meta["to"]), 0.8, str(p.meta["to"]))
    return None


def _top_line(p: Page, conf: float) -> Field_ | None:
    for ln in p.lines[:8]:
        labelled = any(rx.search(ln) for rx in LABELS.values())
        if re.search(r"[^\W\d_]{3}", ln) and len(ln) <= 60 and len(ln.split()) <= 6 and not EMAIL_RX.search(ln) and not labelled:
            return Field_(ln.lstrip("#").strip(), conf, ln)
    return None


def signature(p: Page) -> Field_ | None:
    for i, ln in enumerate(p.lines):
        if m := CLOSING_RX.match(ln):
            for cand in [m.group(1), *p.lines[i + 1:i + 3]]:
                if re.fullmatch(r"[^\W\d_][\w.'\- ]{1,50}", cand.strip(" ,")):
                    return Field_(cand.strip(" ,"), 0.8, ln)
    if p.meta.get("from"):
        return Field_(email.utils.parseaddr(str(p.meta["from"]))[0] or str(p.meta["from"]), 0.7, str(p.meta["from"]))
    return None


def subject(p: Page) -> Field_ | None:
    if p.meta.get("subject"):
        return Field_(str(p.meta["subject"]), 0.95, str(p.meta["subject"]))
    m = re.search(r"^(?:subject|re|betreft|betreff|objet|onderwerp|dotyczy)\s*:\s*(.+)$", p.text, _I | re.M)
    return Field_(m.group(1).strip(), 0.8, m.group()) if m else None


def recipients(p: Page) -> Field_ | None:
    heads = [str(p.meta[k]) for k in ("to", "cc") if p.meta.get(k)]
    if heads:
        found = [a for _, a in email.utils.getaddresses(heads) if a]
        return Field_(found, 0.95, "; ".join(heads)) if found else None
    lines = re.findall(r"^(?:to|cc)\s*:\s*(.+)$", p.text, _I | re.M)
    found = [m.group() for ln in lines for m in EMAIL_RX.finditer(ln)]
    return Field_(found, 0.8, "; ".join(lines)) if found else None


def _header_date(value: Any) -> Field_ | None:
    try:
        return Field_(email.utils.parsedate_to_datetime(str(value)).date().isoformat(), 0.95, str(value))
    except (TypeError, ValueError):
        return None


def parties(p: Page) -> Field_ | None:
    flat = " ".join(p.lines)
    m = re.search(r"\bbetween\s+(.+?)\s+and\s+(.+?)(?:\s*\(|[.;]|,\s|$)", flat, _I)
    if not m:
        return None
    names = [re.sub(r"\s*\(.*$|^[\"'“]|[\"'”]$", "", n).strip(" ,") for n in m.groups()]
    return Field_([n for n in names if n], 0.7, m.group()[:200])


def governing_law(p: Page) -> Field_ | None:
    m = re.search(r"govern(?:ed|s)\s+by\s+(?:and\s+construed\s+in\s+accordance\s+with\s+)?the\s+laws?\s+of\s+"
                  r"(?:the\s+)?([A-Z][\w ]*?)(?=[.,;]|\s+(?:and\s+(?:construed|interpreted|shall)|without|excluding)\b|$)", " ".join(p.lines), re.M)
    return Field_(m.group(1).strip(), 0.8, m.group()) if m else None


def title(p: Page) -> Field_ | None:
    if p.doc.title:
        return Field_(p.doc.title.strip(), 0.9, p.doc.title)
    m = re.search(r"^#{1,3}\s+(.+)$", p.doc.markdown or "", re.M)
    return Field_(m.group(1).strip(), 0.8, m.group()) if m else _top_line(p, 0.4)


def authors(p: Page) -> Field_ | None:
    m = re.search(r"^(?:authors?|by|door|von|par)\s*:?\s+(.+)$", "\n".join(p.lines[:15]), _I | re.M)
    if not m:
        return None
    names = [n.strip() for n in re.split(r",|\band\b|&|\bund\b|\ben\b|\bet\b", m.group(1)) if n.strip()]
    return Field_(names, 0.6, m.group())


def payment_method(p: Page) -> Field_ | None:
    for word, method in PAYMENT_WORDS.items():
        if m := re.search(rf"\b{re.escape(word)}\b", p.text, _I):
            return Field_(method, 0.7, p.text[max(0, m.start() - 20):m.end() + 20])
    return None


def all_dates(p: Page) -> Field_ | None:
    found = list(dict.fromkeys(h.value for row in p.dates for h in row))
    return Field_(found, 0.6, None) if found else None


def all_amounts(p: Page) -> Field_ | None:
    found = list(dict.fromkeys(" ".join(filter(None, h.value)) for row in p.amounts for h in row))
    return Field_(found, 0.5, None) if found else None


def _labelled_string(p: Page, name: str) -> Field_ | None:
    """Custom fields: the text after "<field name>:" on a line."""
    label = re.escape(name.replace("_", " ")).replace(r"\ ", r"[\s_]*")
    m = re.search(rf"^\s*{label}\s*[:#]\s*(.+)$", p.text, _I | re.M)
    return Field_(m.group(1).strip(), 0.6, m.group()) if m else None


FINDERS: dict[tuple[str, str], Callable[[Page], Field_ | None]] = {
    ("*", "invoice_number"): invoice_number, ("*", "order_number"): order_number, ("*", "date"): issue_date,
    ("*", "due_date"): _claimed_date("due_date", 0.85), ("*", "total"): total, ("*", "currency"): currency,
    ("*", "issuer"): issuer, ("*", "recipient"): recipient, ("*", "merchant"): issuer, ("*", "vat_id"): vat_id,
    ("*", "iban"): iban, ("*", "emails"): emails, ("*", "payment_method"): payment_method, ("*", "parties"): parties,
    ("*", "effective_date"): _claimed_date("effective_date", 0.8), ("*", "end_date"): _claimed_date("end_date", 0.7),
    ("*", "value"): total, ("*", "governing_law"): governing_law, ("letter", "sender"): signature, ("letter", "recipient"): addressee,
    ("email", "sender"): first_email, ("*", "subject"): subject, ("*", "recipients"): recipients, ("*", "title"): title,
    ("*", "authors"): authors, ("*", "dates"): all_dates, ("*", "amounts"): all_amounts,
}
TYPE_FINDERS: dict[str, Callable[[Page], Field_ | None]] = {
    "date": issue_date, "amount": total, "currency": currency, "email": first_email, "iban": iban,
    "vat_id": vat_id, "party": issuer,
}
