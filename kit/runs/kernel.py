"""The kernel of a run: its kernelspec, its environment and its transport.

papermill executes the notebook (:mod:`slimkit.runs.runner`); this module decides how its kernel
starts. The kernel gets the run id in ``$SLIMKIT_RUN_ID`` and, under a sweep, a share of the
cores as its thread count.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import SlimkitError

if TYPE_CHECKING:  # the runner imports this module
    from .runner import RunSpec

KERNEL_NAME = "slimkit"
RUN_ID_ENV = "SLIMKIT_RUN_ID"
KERNEL_START_ATTEMPTS = 2  # a kernel that dies before any cell ran is started once more


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Install a kernelspec ``name`` for this interpreter into ``sys.prefix`` if it is missing.

    Installed with ``--sys-prefix`` semantics, and looked up with the environment's path
    preferred (``JUPYTER_PREFER_ENV_PATH``), so a user-level kernelspec of the same name that
    points at another Python cannot win.
    """
    os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if spec.argv and os.path.realpath(spec.argv[0]) == os.path.realpath(sys.executable):
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


def describe_error(exc: BaseException) -> str:
    """One readable error for the record: the cell's exception, or what killed the run."""
    ename = getattr(exc, "ename", None)
    if ename:  # PapermillExecutionError: the notebook's own exception
        return f"cell {getattr(exc, 'exec_count', '?')} raised {ename}: {getattr(exc, 'evalue', '')}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


class KernelDidNotStart(SlimkitError, RuntimeError):
    """The kernel died or failed before any cell ran, on every attempt."""


@contextmanager
def kernel_options(spec: RunSpec) -> Iterator[dict[str, Any]]:
    """papermill engine options for one kernel: its environment (run id, threads) and, on Linux,
    the ``ipc`` transport with the connection file and sockets in a private temporary folder.
    With TCP, jupyter_client picks free ports and the kernel binds them later: another process
    can take one in between (ZMQError: Address already in use). A socket file cannot be taken."""
    from traitlets.config import Config

    env = {RUN_ID_ENV: spec.run_id}
    if spec.threads:  # the kernel's torch reads these at import
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec.threads)
    manager: dict[str, Any] = {"extra_env": env}
    folder = tempfile.mkdtemp(prefix="slimkit-kernel-") if sys.platform.startswith("linux") else None
    if folder:
        manager.update(transport="ipc", connection_file=os.path.join(folder, "kernel.json"))
    try:
        yield {"kernel_manager_class": _kernel_manager_class(), "config": Config({"RunKernelManager": manager})}
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


@functools.cache
def _kernel_manager_class() -> type:
    """nbclient's kernel manager, starting the kernel with ``extra_env`` added to this environment
    (papermill offers no way to pass a kernel's environment; created on first use, as importing
    jupyter_client is slow)."""
    from jupyter_client import AsyncKernelManager
    from traitlets import Dict

    class RunKernelManager(AsyncKernelManager):
        extra_env = Dict(config=True, help="variables added to the kernel's environment")

        async def start_kernel(self, **kw: Any) -> None:
            kw["env"] = {**kw.get("env", os.environ), **self.extra_env}
            await super().start_kernel(**kw)

    return RunKernelManager
