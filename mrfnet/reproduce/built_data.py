"""One rule for every dataset the main job builds: a work folder's LMDBs are reused while their summary.json
says they were built with the wanted settings, and rebuilt otherwise (a changed profile never reads stale
data)."""

from __future__ import annotations

import json
import logging
from typing import Any

from data_prep.build import SUMMARY, build_dataset
from data_prep.options import BuildOptions

log = logging.getLogger(__name__)


def reuse_or_build(options: BuildOptions, wanted: dict[str, Any]) -> dict[str, Any]:
    """The summary of ``options.out``'s data: reused when each ``wanted`` key of its summary.json holds that
    value, built from ``options`` otherwise."""
    if options.out is None:
        raise ValueError("reuse_or_build needs the data's folder (options.out)")
    summary_path = options.out / SUMMARY
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if all(summary.get(key) == value for key, value in wanted.items()):
            log.info("reusing the data in %s", options.out)
            return summary
        log.info("the data in %s was built with other settings: rebuilding it", options.out)
    return build_dataset(options)
