from doclane.events import codec
from doclane.functions.context import Context
from doclane.functions.ports import DocumentRecord
from doclane.functions.reprocess import reprocess
from doclane.functions.runtime import triggers


def test_reprocess_failed_documents(settings):
    ctx = Context(settings)
    ctx.bus.declare(triggers(settings))
    for i, status in enumerate(["failed", "indexed", "failed"]):
        ctx.metadata.register(DocumentRecord(document_id=f"d{i}", bucket="inbox", key=f"{i}.pdf", filename=f"{i}.pdf",
                                             content_type=None, size=1, sha256=f"{i}" * 64, status=status))
    ctx.metadata.update("d0", status="failed", error="classify: parse timed out")
    dry = reprocess(ctx, [], all_failed=True, dry_run=True)
    assert sorted(d for d, _ in dry) == ["d0", "d2"] and ctx.bus.backlog("classify") == 0
    done = dict(reprocess(ctx, ["nope"], all_failed=True))
    assert done == {"nope": "no such document", "d0": "queued", "d2": "queued"}
    assert ctx.metadata.get("d0").status == "uploaded" and ctx.metadata.get("d0").error is None
    ids = set()
    while d := ctx.bus.receive("classify", wait_seconds=0):
        ev = codec.loads(d[0].body)
        assert ev["type"] == "io.doclane.document.uploaded.v1"
        ids.add(ev["subject"])
        ctx.bus.ack(d[0])
    assert ids == {"d0", "d2"}
    # again: a fresh event id each time, so the bus takes it again
    reprocess(ctx, ["d1"])
    assert ctx.bus.backlog("classify") == 1
    ctx.close()
