"""Builds the task application's wheel: at topn's build time (hatch_build.py) and by `./dev` in a checkout.

    python taskapp/build_wheel.py OUT_DIR    # OUT_DIR/topn_taskapp-<version>-py3-none-any.whl and SOURCE

Standard library only, run by any Python that has the `uv_build` backend installed. The wheel is rebuilt
only when the sources changed: OUT_DIR/SOURCE holds the hash of the sources it was built from.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent
STAMP = "SOURCE"  # the file beside the wheel that names the sources' hash


def source_hash(source: Path = SOURCE) -> str:
    """The hash of everything the wheel is built from (this script aside)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in (source / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes())
    for name in ("pyproject.toml", "README.md"):
        digest.update(name.encode() + b"\0" + (source / name).read_bytes())
    return digest.hexdigest()


def build(out: Path) -> Path:
    """The wheel in `out`, built anew only if the sources changed since it was."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = source_hash()
    wheels = sorted(out.glob("*.whl"))
    stamp = out / STAMP
    if len(wheels) == 1 and stamp.is_file() and stamp.read_text().strip() == wanted:
        return wheels[0]
    for old in wheels:
        old.unlink()
    # uv_build finds its binary on PATH: the environment's bin folder, even when it is not activated.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    subprocess.run(
        [sys.executable, "-c", "import sys, uv_build; uv_build.build_wheel(sys.argv[1])", str(out.resolve())],
        cwd=SOURCE,
        check=True,
        timeout=300,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(wanted + "\n")
    (wheel,) = out.glob("*.whl")
    return wheel


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
