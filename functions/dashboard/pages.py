"""The dashboard's pages: each reads through the Context (the same stores and
functions the JSON API uses) and renders a template. Forms post back here and
redirect (post/redirect/get), so a reload never repeats an action."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from flask import current_app, flash, g, jsonify, redirect, render_template, request, session, url_for

from doclane.functions import limits
from doclane.functions import search as search_fn
from doclane.functions import upload as upload_fn
from doclane.functions.auth import Refused
from doclane.functions.dashboard import bp
from doclane.functions.http import ctx, problem
from doclane.functions.reprocess import reprocess
from doclane.functions.status import correct, document_view

PAGE_SIZE = 10
DATE_FILTER_DEPTH = 500  # a date range filters among this many best hits
STAGES = ("uploaded", "classified", "extracted", "indexed", "failed")


@bp.app_context_processor
def _common() -> dict:
    return {"csrf_token": session.get("csrf", ""), "principal": g.get("principal"),
            "ws_url": current_app.config.get("doclane.ws_url")}


def prefers_json() -> bool:
    """Browsers ask for text/html; curl (*/*) and scripts get JSON."""
    accept = request.accept_mimetypes
    return "text/html" not in accept or accept.best_match(["text/html", "application/json"]) != "text/html"


# ------------------------------------------------------------------ session
@bp.route("/login", methods=["GET", "POST"])
def login():
    target = request.values.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # never redirect off-site after a login
    if request.method == "GET":
        return render_template("dashboard/login.html", next=target)
    try:
        current_app.config["doclane.auth"].login(request.form.get("key", ""))
    except Refused as exc:
        return render_template("dashboard/login.html", next=target, error=str(exc)), 401
    return redirect(target)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.login"))


# ------------------------------------------------------------------ upload
@bp.get("/")
def home():
    if prefers_json():
        return current_app.view_functions["api_index"]()
    recent = ctx().metadata.list(limit=15)
    return render_template("dashboard/upload.html", recent=recent, batch_id=request.args.get("batch"))


@bp.post("/ui/upload")
def upload():
    try:
        files = upload_fn.request_files()
    except limits.Refused as exc:  # too large, a lying name, an executable, a zip bomb
        return upload_fn.refused(exc)
    if not files:
        if prefers_json():
            return problem(400, "No file", "choose or drop one or more files")
        flash("Choose or drop one or more files first.", "error")
        return redirect(url_for("dashboard.home"))
    batch = upload_fn.new_batch(ctx(), files)
    if prefers_json():
        return jsonify(batch), 202
    return redirect(url_for("dashboard.home", batch=batch["batch_id"]))


# ------------------------------------------------------------------ search
@bp.get("/ui/search")
def search():
    a = request.args
    q, mode, category = a.get("q", "").strip(), a.get("mode", "hybrid"), a.get("category") or None
    date_from, date_to = a.get("from", ""), a.get("to", "")
    page = max(1, _int(a.get("page"), 1))
    if mode not in search_fn.MODES:
        mode = "hybrid"
    result, error = None, None
    if q:
        try:
            result = _search(q, mode, category, date_from, date_to, page)
        except ValueError as exc:
            error = str(exc)
    pages = -(-result["total"] // PAGE_SIZE) if result else 0

    def search_url(**changes) -> str:
        """This search with some parameters changed; a new filter starts at page 1."""
        merged = {**a.to_dict(), "page": 1, **changes}
        return "/ui/search?" + urlencode({k: v for k, v in merged.items() if v and not (k == "page" and v == 1)})

    return render_template("dashboard/search.html", q=q, mode=mode, category=category, date_from=date_from,
                           date_to=date_to, result=result, error=error, page=page, pages=pages,
                           search_url=search_url, modes=search_fn.MODES)


def _search(q, mode, category, date_from, date_to, page) -> dict:
    """The index pages by score; a date range (upload date, which the index
    does not filter on) is applied to the best DATE_FILTER_DEPTH hits here."""
    context = ctx()
    if not (date_from or date_to):
        return search_fn.run(context, q, mode=mode, category=category, limit=PAGE_SIZE,
                             offset=(page - 1) * PAGE_SIZE)
    lo, hi = _day(date_from, "from"), _day(date_to, "to")
    result = search_fn.run(context, q, mode=mode, category=category, limit=DATE_FILTER_DEPTH)
    kept = []
    for hit in result["results"]:
        rec = context.metadata.get(hit["document_id"])
        created = (rec.created_at or "")[:10] if rec else ""
        if (not lo or created >= lo) and (not hi or created <= hi):
            kept.append(hit)
    start = (page - 1) * PAGE_SIZE
    return {**result, "total": len(kept), "results": kept[start:start + PAGE_SIZE]}


def _day(value: str, name: str) -> str:
    if not value:
        return ""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise ValueError(f"'{name}' must be a date like 2024-05-31, not {value!r}") from None


# ------------------------------------------------------------------ one document
@bp.get("/ui/documents/<document_id>")
def document(document_id: str):
    context = ctx()
    view = document_view(context, document_id)
    if view is None:
        return render_template("dashboard/missing.html", document_id=document_id), 404
    timeline = _timeline(view["events"])
    return render_template("dashboard/document.html", doc=view, timeline=timeline,
                           categories=list(context.categories.names))


def _timeline(events: list[dict]) -> list[dict]:
    """Events with the time since the first one, and the stage's own duration."""
    start = _ts(events[0]["time"]) if events else None
    out = []
    for e in events:
        at = _ts(e["time"])
        out.append({**e, "short_type": e["type"].removeprefix("io.doclane.").rsplit(".v", 1)[0],
                    "offset_ms": round((at - start).total_seconds() * 1000) if at and start else None})
    return out


@bp.post("/ui/documents/<document_id>/category")
def correct_category(document_id: str):
    category = request.form.get("category", "")
    resp = correct(ctx(), document_id, {"category": category})
    resp = resp[0] if isinstance(resp, tuple) else resp
    if resp.status_code >= 400:
        flash(f"Not changed: {resp.get_json().get('detail')}", "error")
    else:
        flash(f"Category set to {category}; the classifier keeps this as an example.", "ok")
    return redirect(url_for("dashboard.document", document_id=document_id))


# ------------------------------------------------------------------ failures
@bp.get("/ui/failures")
def failures():
    failed = ctx().metadata.list(status="failed", limit=200)
    return render_template("dashboard/failures.html", failed=failed)


@bp.post("/ui/failures/retry")
def retry():
    ids = request.form.getlist("document_id")
    everything = request.form.get("all") == "1"
    if not ids and not everything:
        flash("Nothing chosen to retry.", "error")
        return redirect(url_for("dashboard.failures"))
    done = reprocess(ctx(), ids, all_failed=everything)
    queued = sum(1 for _, outcome in done if outcome == "queued")
    flash(f"{queued} document{'s' if queued != 1 else ''} sent through the pipeline again.", "ok")
    return redirect(url_for("dashboard.failures"))


# ------------------------------------------------------------------ stats
@bp.get("/ui/stats")
def stats():
    context = ctx()
    counts = context.metadata.stats()
    queues = getattr(context.bus, "counts", lambda: {})()
    indexed = [e for e in context.metadata.recent_events(2000) if e["type"].endswith(".document.indexed.v1")]
    return render_template("dashboard/stats.html", counts=counts, stages=STAGES, queues=queues,
                           chart=throughput(indexed, datetime.now(timezone.utc)))


def throughput(events: list[dict], now: datetime, bars: int = 12) -> dict:
    """Documents indexed per time slot, for a bar chart: the last hour in
    5-minute slots, or longer slots when the events go further back."""
    times = [t for t in (_ts(e["time"]) for e in events) if t]
    span = max(timedelta(hours=1), now - min(times)) if times else timedelta(hours=1)
    slot = span / bars
    counts = [0] * bars
    for t in times:
        i = bars - 1 - int((now - t) / slot)
        if 0 <= i < bars:
            counts[i] += 1
    top = max(counts) or 1
    return {"bars": [{"count": c, "height": round(100 * c / top), "x": i * 25,
                      "label": (now - slot * (bars - 1 - i)).strftime("%H:%M")} for i, c in enumerate(counts)],
            "slot_minutes": round(slot.total_seconds() / 60, 1), "total": sum(counts)}


def _ts(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default

