"""``python -m mt_storage.warm [--nice N] MODULE...``: a warm standby child. It imports the child modules
(torch and transformers, or tokenizers, with them) ahead of any job, then waits; the job handed to it runs
exactly as ``python -m MODULE`` would, without paying for the imports (``mt_storage.process.WarmChild`` is
the worker's side).

The protocol, on top of the one child protocol (``mt_storage.child``): once every module is imported the
standby writes one ``Ready`` line on stdout (and says so on its stderr, ``standby.log`` in its TMPDIR); then
it reads one ``Handover`` line on stdin (which module, and the job's process log), points its stderr at that
log (appended to; its first line there names the standby and the module), and calls the module's ``main``,
which reads the rest of stdin (the spec) as usual. End of stdin before a handover (the worker closed it, or
died) ends the standby with code 0.

Why a standby rather than a fork server: forking a process that imported torch is only safe before any thread
pool starts and carries the parent's state into every job; a standby is an ordinary child started the
ordinary way, one per job, so it is safe with threads by construction, a cancel reaches it as any child (its
own process group), and it exits when its job ends. Its cost is one import per job, as before, paid while
the previous job runs or the worker idles instead of after the next job started.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Protocol, runtime_checkable

import msgspec

from mt_contracts import codec
from mt_storage.child import leave


class Ready(msgspec.Struct, frozen=True, tag="ready"):
    """The standby's first stdout line: its modules are imported and it waits for a ``Handover``."""

    pid: int


class Handover(msgspec.Struct, frozen=True, kw_only=True):
    """The worker's first stdin line to a standby: run ``module`` (one of those it imported) with ``argv``,
    stderr appended to ``log_path``; the spec follows on stdin."""

    module: str
    log_path: str
    argv: list[str] = msgspec.field(default_factory=list)


@runtime_checkable
class ChildModule(Protocol):
    """A child module's entry point: ``main(argv)`` returns the exit code."""

    def main(self, argv: list[str]) -> int: ...


def entry_module(module: str) -> str:
    """What ``python -m module`` runs: the package's ``__main__`` for a package, else the module itself.

    Raises:
        ModuleNotFoundError: ``module`` does not exist.
    """
    found = importlib.util.find_spec(module)
    if found is None:
        raise ModuleNotFoundError(f"no module named {module!r}", name=module)
    return f"{module}.__main__" if found.submodule_search_locations is not None else module


def load(module: str) -> ChildModule:
    """Import ``module``'s entry (see ``entry_module``) and return it.

    Raises:
        TypeError: it has no ``main``.
    """
    loaded = importlib.import_module(entry_module(module))
    if not isinstance(loaded, ChildModule):
        raise TypeError(f"{loaded.__name__} has no main(argv)")
    return loaded


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_storage.warm")
    parser.add_argument("--nice", type=int, default=0, help="added to this process's niceness, before the imports")
    parser.add_argument("modules", nargs="+", help="the child modules a job may run")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # first, so the imports and every thread started later run at the job's priority
    # The pipe to the worker is kept aside while the modules import: a library that prints on stdout then
    # writes to stderr, never into the messages.
    messages = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    modules = {name: load(name) for name in args.modules}
    os.write(messages, codec.encode(Ready(pid=os.getpid())) + b"\n")
    print(f"mt_storage.warm: standby {os.getpid()} ready for {' '.join(modules)}", file=sys.stderr, flush=True)
    line = sys.stdin.buffer.readline()
    if not line:
        return 0
    handover = codec.decode(line, Handover)
    child = modules.get(handover.module)
    if child is None:
        print(f"mt_storage.warm: {handover.module} is not one of {sorted(modules)}", file=sys.stderr)
        return 2
    log = os.open(handover.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, sys.stderr.fileno())
    os.close(log)
    os.dup2(messages, sys.stdout.fileno())
    os.close(messages)
    print(f"mt_storage.warm: standby {os.getpid()} runs {handover.module}", file=sys.stderr, flush=True)
    return child.main(handover.argv)


if __name__ == "__main__":
    leave(main(sys.argv[1:]))
