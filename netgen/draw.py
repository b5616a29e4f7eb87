"""Pictures of the generated nets with Caffe's own ``caffe.draw`` (pydot and Graphviz's ``dot``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from netgen.errors import NetgenError, NetgenMissing
from netgen.network import build_deploy


def draw_variant(variant: str, out_dir: str | Path, *, rankdir: str = "TB", ext: str = "png") -> Path:
    """Render ``variant``'s deploy net to ``<out_dir>/<variant>.<ext>``; the paths read top to bottom."""
    try:
        from caffe import draw
    except ImportError as exc:  # caffe.draw imports pydot
        raise NetgenError(f"drawing needs pydot (pip install pydot): {exc}") from exc
    if shutil.which("dot") is None:
        raise NetgenMissing("drawing needs Graphviz's `dot` (apt-get install graphviz)")
    path = Path(out_dir) / f"{variant}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    draw.draw_net_to_file(build_deploy(variant), str(path), rankdir)
    return path
