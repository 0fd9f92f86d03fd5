"""The dashboard: an HTTP function serving server-rendered pages (Jinja) with
a little vanilla JavaScript on top (drag and drop, live progress); every page
works as plain HTML forms and links without it.

  /                      upload (drag and drop), batch progress, recent activity
  /ui/search             search with mode, category facet, date range, highlights, pages
  /ui/documents/{id}     metadata, fields with confidence, timeline, download, correction
  /ui/failures           failed documents with their reason; retry one or all
  /ui/stats              counts per stage and category, throughput over time
  /login, /logout        the session cookie (functions/auth.py)
  /ui/live/...           Server-Sent Events for the pages (live.py)
  /ws/progress/{batch}   WebSocket, served on its own port by ws.py (waitress cannot upgrade)

It reads through the same Context as every function, so it deploys like one:
`dashboard.create_app(context)` is a WSGI app on its own, and `doclane up`
mounts the blueprint on its one port.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/dashboard")

from doclane.functions.dashboard import live, pages  # noqa: E402,F401  (routes register on bp)
