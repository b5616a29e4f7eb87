"""Access to the Caffe build: a clear import error, build facts, and isolation from Caffe's aborts.

Caffe reports bad input with glog CHECK failures, which abort the whole process (SIGABRT). Work
that can hit one (loading a prototxt, a caffemodel, a solver) runs through :func:`run_isolated`,
which turns an abort in a child process into a :class:`CaffeError` carrying glog's own message.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from types import ModuleType
from typing import Any

from mrfnet.runtime.errors import InvalidValue

SETUP_HINT = "run `bash tools/bootstrap.sh setup` from the repository to build and link Caffe"


class CaffeNotAvailable(ImportError):
    """pycaffe cannot be imported in this environment."""


class CaffeError(RuntimeError):
    """Caffe rejected its input: a failed CHECK, a fatal log line, or an exception in the child."""


def quiet_glog(env: MutableMapping[str, str]) -> None:
    """Caffe's INFO lines (net set-up dumps) drown the project's logging: warnings and errors only, unless
    the user set GLOG_minloglevel. glog reads it once, when a process first imports Caffe."""
    env.setdefault("GLOG_minloglevel", "2")


def import_caffe() -> ModuleType:
    """Import pycaffe, or raise :class:`CaffeNotAvailable` saying how to get it."""
    quiet_glog(os.environ)
    try:
        import caffe
    except ImportError as exc:
        raise CaffeNotAvailable(f"pycaffe is not importable ({exc}); {SETUP_HINT}") from exc
    return caffe


def dnnl_facts(caffe: ModuleType) -> dict[str, Any]:
    """What the DNNL engine of this pycaffe offers (tools/caffe-patches/0008); a Caffe without the patch has none.

    ``dnnl``: built with it; ``dnnl_version``: oneDNN's; ``dnnl_native_bf16``: the CPU runs bfloat16 natively.
    """
    if not getattr(caffe, "has_dnnl", lambda: False)():
        return {"dnnl": False, "dnnl_version": "", "dnnl_native_bf16": False}
    return {"dnnl": True, "dnnl_version": caffe.dnnl_version(), "dnnl_native_bf16": bool(caffe.dnnl_native_bf16())}


def caffe_prefix(caffe: ModuleType) -> Path:
    """The install prefix of a Caffe built by tools/install_caffe.sh (prefix/lib/python3/dist-packages/caffe)."""
    return Path(caffe.__file__).resolve().parents[4]


def env_for_build(prefix: Path | None) -> dict[str, str]:
    """This process's environment with pycaffe taken from ``prefix`` (a tools/install_caffe.sh prefix; None: as is).

    For benchmarks that run one child process per build, side by side.
    """
    if prefix is None:
        return dict(os.environ)
    site = Path(prefix) / "lib" / "python3" / "dist-packages"
    if not (site / "caffe").is_dir():
        raise InvalidValue(f"{prefix} holds no pycaffe (no {site / 'caffe'}): pass a prefix of tools/install_caffe.sh")
    paths = [str(site), os.environ.get("PYTHONPATH", "")]  # ahead of the .pth install_caffe.sh wrote for this Python
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def run_script_with_build(prefix: Path | None, script: str, args: list[str], repo: Path) -> Any:
    """Run ``script`` with ``args`` in a child whose pycaffe comes from ``prefix`` (None: this Python's) and
    the project from ``repo``; returns the JSON of its last stdout line. SystemExit with its stderr if it fails.

    The side-by-side benchmarks' one way of running a build.
    """
    try:
        env = env_for_build(prefix)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(repo)]))
    quiet_glog(env)
    done = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{Path(script).name} {' '.join(args)} with {prefix or 'this Python'} failed:\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def child_environment(**values: str) -> Iterator[None]:
    """Set environment variables for processes started inside the block (spawned children read them at
    start-up, e.g. glog's GLOG_minloglevel when they import Caffe), and restore this process's after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_info(caffe: ModuleType) -> dict[str, str]:
    """The ``build-info.txt`` written by tools/install_caffe.sh, or {} for a Caffe built elsewhere."""
    info_file = caffe_prefix(caffe) / "build-info.txt"
    if not info_file.is_file():
        return {}
    pairs = (line.split(": ", 1) for line in info_file.read_text().splitlines() if ": " in line)
    return {key: value for key, value in pairs}


def _child_main(conn: Any, log_path: str, func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 2)  # glog writes to fd 2: keep it for the error message
    try:
        conn.send(("ok", func(*args, **kwargs)))
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


GLOG_PREFIX = re.compile(r"^([IWEF])\d{8} [\d:.]+ +\d+ ")  # "F20261124 23:53:10.448673  4909 "


def glog_failure(log_text: str) -> str:
    """The error and fatal glog lines of a child's stderr (time stamps dropped), else its tail."""
    lines = log_text.strip().splitlines()
    errors = [GLOG_PREFIX.sub(r"\1 ", line) for line in lines if GLOG_PREFIX.match(line) and line[0] in "EF"]
    return "\n".join(errors[-5:] or lines[-15:])


def run_isolated(func: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Run ``func(*args, **kwargs)`` in a fresh process and return its (picklable) result.

    A Python exception in the child or a Caffe abort becomes a :class:`CaffeError` whose message
    holds the child's error, so a caller never dies of a SIGABRT. ``func`` must be importable
    (a module-level function), since the child is spawned, not forked.
    """
    context = multiprocessing.get_context("spawn")
    parent_conn, child_conn = context.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix="mrfnet-caffe-", suffix=".log", delete=False) as log:
        log_path = log.name
    try:
        process = context.Process(target=_child_main, args=(child_conn, log_path, func, args, kwargs))
        process.start()
        child_conn.close()
        result = None
        try:
            if not parent_conn.poll(timeout):
                process.kill()
                process.join()
                raise CaffeError(f"{func.__name__} did not finish within {timeout} s")
            result = parent_conn.recv()
        except EOFError:  # the child died before sending anything
            pass
        process.join()
        log_text = Path(log_path).read_text(errors="replace")
    finally:
        os.unlink(log_path)
    if result is None:
        code = process.exitcode or 0
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise CaffeError(f"Caffe aborted ({how}) in {func.__name__}:\n{glog_failure(log_text)}")
    status, value = result
    if status == "error":
        raise CaffeError(f"{func.__name__} failed:\n{value}\n{glog_failure(log_text)}".rstrip())
    return value
