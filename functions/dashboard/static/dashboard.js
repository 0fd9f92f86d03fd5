// doclane dashboard: progressive enhancement only. Without this file every
// page still works through plain forms and links.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf;
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const docLink = (d) => `<a href="/ui/documents/${encodeURIComponent(d.document_id)}">${esc(d.filename || d.document_id)}</a>`;

  // ---- upload: drag and drop, then send the form with fetch and follow the batch live
  const form = document.getElementById("upload");
  const drop = document.getElementById("drop");
  if (form && drop) {
    const input = form.querySelector("input[type=file]");
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
    drop.addEventListener("drop", (e) => { input.files = e.dataTransfer.files; send(); });
    form.addEventListener("submit", (e) => { e.preventDefault(); send(); });
    async function send() {
      if (!input.files.length) return;
      drop.querySelector("span").textContent = `Uploading ${input.files.length} file(s)…`;
      const resp = await fetch(form.action, {method: "POST", body: new FormData(form),
        headers: {"Accept": "application/json", "X-CSRF-Token": csrf}});
      const body = await resp.json();
      drop.querySelector("span").textContent = "Drop files here, or choose them";
      form.reset();
      if (!resp.ok) { alert(body.detail || resp.statusText); return; }
      history.replaceState(null, "", `/?batch=${body.batch_id}`);
      followBatch(body.batch_id);
    }
  }

  // ---- batch progress over Server-Sent Events
  const batchBox = document.getElementById("batch");
  function followBatch(id) {
    if (!batchBox || !id) return;
    batchBox.hidden = false;
    batchBox.dataset.batch = id;
    batchBox.querySelector(".batch-id").textContent = id;
    const source = new EventSource(`/ui/live/batch/${encodeURIComponent(id)}`);
    source.addEventListener("batch", (e) => showBatch(JSON.parse(e.data), source));
    source.addEventListener("error", () => { if (batchBox.dataset.done === "1") source.close(); });
  }
  function showBatch(b, source) {
    const bar = document.getElementById("batch-bar");
    bar.max = Math.max(1, b.total); bar.value = b.indexed + b.failed;
    document.getElementById("batch-summary").textContent =
      `${b.indexed} indexed, ${b.failed} failed, ${b.pending} in progress of ${b.total}` + (b.done ? " · done" : "");
    document.getElementById("batch-docs").innerHTML = b.documents.map((d) =>
      `<tr data-doc="${esc(d.document_id)}"><td>${docLink(d)}</td><td><span class="status ${esc(d.status)}">${esc(d.status)}</span>` +
      `${d.error ? ` <span class="reason">${esc(d.error)}</span>` : ""}</td><td>${esc(d.category)}</td></tr>`).join("");
    if (b.done) { batchBox.dataset.done = "1"; source.close(); }
  }
  if (batchBox && batchBox.dataset.batch) followBatch(batchBox.dataset.batch);

  // ---- live events: recent documents' status, and a document's timeline
  document.querySelectorAll("[data-live=events]").forEach((body) => {
    const only = body.dataset.document;
    const source = new EventSource("/ui/live/events" + (only ? `?document_id=${encodeURIComponent(only)}` : ""));
    source.addEventListener("event", (e) => {
      const ev = JSON.parse(e.data);
      if (only) {
        const row = document.createElement("tr");
        row.className = "fresh";
        row.innerHTML = `<td class="muted">now</td><td>${esc(ev.event.replace("io.doclane.", "").replace(/\.v\d+$/, ""))}</td>` +
          `<td>${esc(ev.stage)}</td><td>${ev.duration_ms != null ? Math.round(ev.duration_ms) + " ms" : ""}</td>`;
        body.appendChild(row);
        const status = document.getElementById("doc-status");
        if (status && ev.status) { status.textContent = ev.status; status.className = `status ${ev.status}`; }
        return;
      }
      if (!ev.document_id) return;
      let row = body.querySelector(`tr[data-doc="${CSS.escape(ev.document_id)}"]`);
      if (!row) {
        body.querySelector("tr.empty")?.remove();
        row = document.createElement("tr");
        row.dataset.doc = ev.document_id;
        row.innerHTML = `<td>${docLink(ev)}</td><td></td><td></td><td>${esc((ev.time || "").slice(0, 19).replace("T", " "))}</td>`;
        body.prepend(row);
      }
      row.children[1].innerHTML = `<span class="status ${esc(ev.status)}">${esc(ev.status)}</span>`;
      row.children[2].textContent = ev.category || "";
      row.classList.remove("fresh"); void row.offsetWidth; row.classList.add("fresh");
    });
  });
})();
