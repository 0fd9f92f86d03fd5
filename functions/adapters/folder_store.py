"""ObjectStore on a local folder: the embedded default bucket (the inbox) and
artefact store. Keys are '/'-separated paths below the root; a key that
would escape the root is refused."""

from __future__ import annotations

import mimetypes
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from doclane.functions.errors import NotFound, Permanent
from doclane.functions.limits import key_problem
from doclane.functions.ports import ObjectInfo


def safe_key(key: str) -> str:
    """Normalise a key and refuse anything that is not a plain relative path
    (limits.key_problem: the same rule for every store)."""
    problem = key_problem(key)
    if problem:
        raise Permanent(problem)
    return "/".join(p for p in PurePosixPath(key).parts if p != ".")


class FolderStore:
    def __init__(self, root: str | Path, bucket: str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket or self.root.name

    def _path(self, key: str) -> Path:
        path = self.root / safe_key(key)
        # A symlink in the folder must not lead out of it (to /etc, another
        # user's files): what it resolves to has to stay below the root.
        if not path.resolve().is_relative_to(self.root):
            raise Permanent(f"object key {key[:200]!r} leads outside the store (a symbolic link?)")
        return path

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"{self.bucket}/{key} does not exist") from None

    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: readers (and the inbox watcher)
        # never see half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.head(key)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{self.bucket}/{key} does not exist") from None
        if not path.is_file():
            raise NotFound(f"{self.bucket}/{key} is not a file")
        return ObjectInfo(self.bucket, safe_key(key), st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}",
                          mimetypes.guess_type(path.name)[0])

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or is_hidden(path.relative_to(self.root)):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                st = path.stat()
                yield ObjectInfo(self.bucket, key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}",
                                 mimetypes.guess_type(path.name)[0])


def is_hidden(rel: Path) -> bool:
    """Dot-files and partial downloads are not documents (yet)."""
    return any(part.startswith(".") for part in rel.parts) or rel.name.endswith((".part", ".crdownload", ".tmp", "~"))
