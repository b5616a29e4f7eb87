"""progress.csv and the progress bar: what the parent records of each step its solver children report."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.atomic import reporting_no_room, write_atomic, write_json_atomic
from mrfnet.runtime.run_files import BEST_MODEL, BEST_RECORD, PROGRESS, SNAPSHOT_DIR
from mrfnet.train.validation import COLUMNS as VAL_COLUMNS

log = logging.getLogger(__name__)


def recorded_rows(run_dir: Path) -> dict[int, bool] | None:
    """The iterations progress.csv holds a row for, each with whether it holds a validation (None: no file).

    A resume starts from the newest snapshot whose row is here (a row is sent before its snapshot is
    written, but the parent can be killed before it writes it), and scores the restored iteration again
    when its validation was cut short by a stop.
    """
    path = run_dir / PROGRESS
    if not path.is_file():
        return None
    whole = [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]  # not a cut one
    rows = csv.DictReader(whole)
    if not rows.fieldnames or rows.fieldnames[0] != "iteration":  # not a progress log: it is written anew
        return None
    return {int(row["iteration"]): bool(row.get("val_psnr")) for row in rows if (row.get("iteration") or "").isdigit()}


class ProgressLog:
    """progress.csv (one row per iteration, val columns filled where validation ran), best.json, the tqdm bar."""

    def __init__(self, run_dir: Path, start: int, total: int, batch_size: int, validate: bool) -> None:
        self._path = path = run_dir / PROGRESS
        new = not path.exists() or not self._keep_rows_up_to(path, start)
        self._run_dir = run_dir
        self._file = path.open("a", newline="")
        self._writer = csv.writer(self._file)
        self._new = new
        self._validate = validate
        self._batch_size = batch_size
        self._bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, desc="train")
        self._last = (time.monotonic(), start)
        self._val_note = ""

    @staticmethod
    def _keep_rows_up_to(path: Path, start: int) -> bool:
        """Cut progress.csv back to its header and the rows up to ``start``, where a resumed run carries on
        (the rows after it are written again); False when it has no header (removed: it starts anew)."""
        lines = [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
        if not lines or not lines[0].startswith("iteration,"):
            log.warning("%s has no header: writing it anew", path)
            path.unlink()
            return False
        rows = [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= start]
        write_atomic(path, (lines[0] + "".join(rows)).encode())
        return True

    def update(self, info: dict[str, Any]) -> None:
        losses = info["losses"]
        val_columns = list(VAL_COLUMNS) if self._validate else []
        val = info.get("val")
        rows = [[info["iteration"], f"{time.time():.3f}", info["lr"], *losses.values(), *info["weights"],
                 *(f"{val[c]:.4f}" if val else "" for c in val_columns)]]
        if self._new:
            weights = [f"weight_{k}" for k in losses if k.startswith("loss_r")]
            rows.insert(0, ["iteration", "wall_time", "lr", *losses, *weights, *val_columns])
            self._new = False
        with reporting_no_room(self._path):  # a full disk: one line; the rows up to the last snapshot stay
            self._writer.writerows(rows)
            self._file.flush()  # a killed parent still leaves every row it was told about
        if val:
            self._record_validation(info["iteration"], val)
        now = time.monotonic()
        images_per_s = (info["iteration"] - self._last[1]) * self._batch_size / max(now - self._last[0], 1e-9)
        self._last = (now, info["iteration"])
        self._bar.set_postfix_str(" ".join(f"{k}={v:.4g}" for k, v in losses.items())
                                  + f" lr={info['lr']:.2e} img/s={images_per_s:.1f}" + self._val_note)
        self._bar.update(info["iteration"] - self._bar.n)

    def fill_validation(self, iteration: int, val: dict[str, Any]) -> None:
        """Write ``val`` into the row of ``iteration`` (a validation a stop cut short, scored on resume)."""
        self._file.close()
        with self._path.open(newline="") as file:
            rows = list(csv.reader(file))
        for row in rows[1:]:
            if row and row[0] == str(iteration) and len(row) == len(rows[0]):
                for column in VAL_COLUMNS:
                    row[rows[0].index(column)] = f"{val[column]:.4f}"
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        write_atomic(self._path, text.getvalue().encode())
        self._file = self._path.open("a", newline="")
        self._writer = csv.writer(self._file)
        self._record_validation(iteration, val)
        log.info("iteration %d: the validation a stop cut short, scored now", iteration)

    def _record_validation(self, iteration: int, val: dict[str, Any]) -> None:
        self._val_note = f" val={val['val_psnr']:.2f}dB({val['val_gain_db']:+.2f})"
        if val["best"]:
            best = {"iteration": iteration, **{k: v for k, v in val.items() if k != "best"},
                    "caffemodel": f"{SNAPSHOT_DIR}/{BEST_MODEL}"}
            write_json_atomic(self._run_dir / BEST_RECORD, best)

    def close(self) -> None:
        self._bar.close()
        with reporting_no_room(self._path):
            self._file.close()
