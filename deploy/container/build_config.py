"""Hand the host's pip configuration to a container build, at build time only.

BentoML's generated Dockerfile installs the Bento's requirements with `uv pip install`, and uv does
not read pip's configuration. This reads the host's (`pip config list`: files and PIP_* variables)
and writes, into OUT_DIR:
  - uv/uv.toml: the same index, extra indexes, find-links and certificate trust, for uv;
  - containers.conf: for podman/buildah (CONTAINERS_CONF), mounting that uv.toml at /etc/uv/, the
    host's certificate bundle and every local folder the configuration points at, read-only, into
    each RUN step; the host network; the runc runtime.
Nothing of it enters an image layer (mounts are not committed), and the repository names no index.
Usage: python deploy/container/build_config.py OUT_DIR [PIP]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


def pip_settings(pip: str) -> dict[str, str]:
    """pip's effective settings: `:env:` (PIP_* variables) overrides the configuration files."""
    listed = subprocess.run([pip, "config", "list"], check=True, capture_output=True, text=True).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in listed.splitlines():
        match = LINE.match(line.strip())
        if match and match["scope"] in {"global", "install", ":env:"}:
            (env if match["scope"] == ":env:" else files)[match["key"]] = match["value"]
    return {**files, **env}


def local_path(location: str) -> Path | None:
    """The folder on this machine a pip location names, if it names one."""
    path = Path(location.removeprefix("file://"))
    if location.startswith("file://") or path.is_absolute():
        # A simple index at file:///x/simple refers to its files relatively (../../files): mount x/.
        return path.parent if path.name == "simple" else path
    return None


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def main(out_dir: Path, pip: str) -> None:
    settings = pip_settings(pip)
    lines = [
        'index-strategy = "unsafe-best-match"  # as pip: the best version among all indexes',
        "no-cache = true  # a temporary cache, gone with the build step: no download cache in the image",
    ]
    if "index-url" in settings:
        lines.append(f"index-url = {json.dumps(settings['index-url'])}")
    extra = settings.get("extra-index-url", "").split()
    links = settings.get("find-links", "").split()
    if extra:
        lines.append(f"extra-index-url = {toml_list(extra)}")
    if links:
        lines.append(f"find-links = {toml_list(links)}")
    mounts = sorted({str(p) for p in map(local_path, extra + links) if p is not None and p.exists()})
    if "cert" in settings:
        lines.append("system-certs = true  # trust the system store, where the host's bundle is mounted")
        mounts.append(f"{settings['cert']}:/etc/ssl/certs/ca-certificates.crt")
    (out_dir / "uv").mkdir(parents=True, exist_ok=True)
    (out_dir / "uv" / "uv.toml").write_text("\n".join(lines) + "\n")
    volumes = [f"{m}:{m}:ro" if ":" not in m else f"{m}:ro" for m in mounts]
    volumes.append(f"{out_dir.resolve() / 'uv'}:/etc/uv:ro")
    (out_dir / "containers.conf").write_text(
        "[containers]\n"
        f"volumes = {toml_list(volumes)}\n"
        'netns = "host"\n'
        "[engine]\n"
        # crun refuses this machine's hybrid cgroup layout ("cgroups in hybrid mode not supported").
        'runtime = "runc"\n'
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "pip")
