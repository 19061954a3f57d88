"""slimkit: run compression notebooks headless, record every run, compare runs.

  slimkit run NOTEBOOK -p NAME VALUE ... [-f params.yaml] [--device cuda] [--out runs/]
  slimkit sweep NOTEBOOK --grid grid.yaml [--workers N] [--engine dask --scheduler ADDRESS]
  slimkit runs [--status failed] [--sweep NAME] [--where bits=4]
  slimkit compare [RUN_ID ...] [--sweep NAME] [--x size_bytes --y accuracy]
  slimkit params NOTEBOOK        the notebook's parameters, types, defaults and help
  slimkit demo                   compress the digits CNN with each method; print a table

"slimkit COMMAND --help" describes a command, with examples.

Exit status: 0 success, 1 a run failed, 2 bad input (the message says which parameter and why)
or a sweep already running, 130 interrupted (Ctrl-C or SIGTERM; rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _store(args):
    from .records import RunStore, default_path

    return RunStore(args.records or default_path(args.out))


def _params(args) -> dict[str, Any]:
    """-f file first, then -p NAME VALUE pairs (typed by the notebook's parameters cell)."""
    from .params import read_params_file, read_signature

    sig = read_signature(args.notebook)
    params: dict[str, Any] = read_params_file(args.file) if args.file else {}
    for name, text in args.param or []:
        params[name] = sig.coerce(name, text)
    return params


def _check_device(device: str | None) -> None:
    if device:
        from ..devices import resolve_device

        resolve_device(device)  # an absent device fails here, before a record or kernel exists


def _kernel(args) -> dict[str, str]:
    return {"kernel_name": args.kernel} if args.kernel else {}  # else the runner's default kernel


def _progress(i: int, n: int, elapsed: float, source: str) -> None:
    first = next((line for line in source.splitlines() if line.strip() and not line.startswith("#")), "")
    print(f"cell {i} of {n}, {elapsed:6.1f} s elapsed  {first[:60]}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from ..events import Status
    from .runner import plan_run, run_spec

    _check_device(args.device)
    spec = plan_run(args.notebook, _params(args), out=args.out, name=args.name, device=args.device,
                   cell_timeout=args.cell_timeout, html=not args.no_html, **_kernel(args))
    with _store(args) as store:  # opened only once the parameters are known to be good
        record = run_spec(spec, store, progress=None if args.quiet else _progress)
    print(f"{record.status}: {record.output_dir} ({record.duration_s:.1f} s)")
    if record.error:
        print(f"error: {record.error}", file=sys.stderr)
    return 0 if record.status == Status.OK else 1


def cmd_sweep(args) -> int:
    from ..errors import InvalidParameterError
    from ..events import Status
    from .records import table
    from .sweep import (
        dask_executors,
        dask_workers_alive,
        default_name,
        load_grid,
        plan,
        run_sweep,
    )

    name = args.name or default_name(args.notebook, args.grid)
    specs = plan(args.notebook, load_grid(args.grid), out=args.out, sweep=name, device=args.device,
                 cell_timeout=args.cell_timeout, html=args.html, **_kernel(args))
    executor = gpu_executor = client = alive = None
    if args.engine == "dask":
        if not args.scheduler:
            raise InvalidParameterError("--scheduler", None, "the address of a running Dask scheduler "
                                        "(e.g. tcp://host:8786) with --engine dask")
        client, executor, gpu_executor = dask_executors(args.scheduler)
        alive = dask_workers_alive(client)
    elif args.scheduler:
        raise InvalidParameterError("--scheduler", args.scheduler, "only with --engine dask")
    elif args.device:
        _check_device(args.device)

    def done(record):
        print(f"{record.status:6s} {Path(record.output_dir).name} ({record.duration_s or 0:.1f} s)"
              + (f"  {record.error}" if record.error else ""), flush=True)

    try:
        with _store(args) as store:  # every combination was validated above, before this
            records = run_sweep(specs, store, executor=executor, gpu_executor=gpu_executor, workers=args.workers,
                                resume=not args.no_resume, on_done=done, wait_lock=args.wait,
                                workers_alive=alive, worker_timeout=args.worker_timeout)
    finally:
        if client is not None:
            client.close()
    print(table(records))
    return 0 if all(r.status == Status.OK for r in records) else 1


def _where(items: list[str] | None) -> dict[str, Any]:
    from ..errors import InvalidParameterError
    from .params import parse_value

    out = {}
    for item in items or []:
        if "=" not in item:
            raise InvalidParameterError("--where", item, "NAME=VALUE")
        name, value = item.split("=", 1)
        out[name] = parse_value(value)
    return out


def cmd_runs(args) -> int:
    from .records import table

    with _store(args) as store:
        store.reap()  # a killed sweep's runs show as interrupted, not running forever
        records = store.query(status=args.status, notebook=args.notebook, sweep=args.sweep,
                              where=_where(args.where), limit=args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2, default=str))
    else:
        print(table(records) if records else "no runs recorded")
    return 0


def cmd_compare(args) -> int:
    from ..errors import InvalidParameterError
    from ..table import markdown_table
    from .compare import compare_runs, comparison_rows

    with _store(args) as store:
        if args.ids:
            records = [store.get(i) for i in args.ids]
            missing = [i for i, r in zip(args.ids, records) if r is None]
            if missing:
                raise InvalidParameterError("run id", missing[0], "the id of a recorded run (see `slimkit runs`)")
        else:
            records = store.query(status=args.status, notebook=args.notebook, sweep=args.sweep,
                                  where=_where(args.where))
    if not records:
        print("no runs to compare", file=sys.stderr)
        return 1
    paths = compare_runs(records, args.compare_out, x=args.x, y=args.y, metrics=args.metric or None)
    rows = comparison_rows(records, args.metric or None)
    print(markdown_table(rows, [c for c in rows[0] if c != "hardware"]))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_params(args) -> int:
    from .params import read_signature

    print(read_signature(args.notebook).help())
    return 0


def cmd_demo(args) -> int:
    from ..zoo.demo import main as demo

    return demo(seed=args.seed, device=args.device)


def cmd_kernel(args) -> int:
    from .kernel import ensure_kernel

    print(f"kernel {ensure_kernel(args.name)!r} installed for {sys.executable} in {sys.prefix}")
    return 0


RUNS_EPILOG = """examples:
  slimkit runs                                   every recorded run (in runs/records.sqlite)
  slimkit runs --status failed --limit 5         the last five failures, with their errors
  slimkit runs --sweep quantize-grid --where bits=4
  slimkit runs --json > runs.json                full records: parameters, metrics, hardware, versions
"""

COMPARE_EPILOG = """examples:
  slimkit compare                                all recorded runs: table and plot in compare/
  slimkit compare --sweep quantize-grid --x size_bytes --y accuracy
  slimkit compare 20250101-120000-ab12cd 20250101-121500-ef34gh --metric accuracy

The metrics are the keys of each run's metrics.json (they depend on the notebook), e.g.
accuracy, size_bytes, latency_ms, teacher_accuracy; "slimkit runs --json" shows them all, and
an unknown --x/--y is refused with the list of the metrics the runs have.
"""

STATUS_HELP = "only runs with this status: running, ok, failed or interrupted"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser. It imports nothing heavy (no torch, no papermill): `slimkit --help`
    and bad arguments answer at once; each command imports what it needs when it runs."""
    p = argparse.ArgumentParser(prog="slimkit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def parser(name: str, summary: str, epilog: str | None = None):
        return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                              epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)

    def common(sp, out_default="runs"):
        sp.add_argument("--out", default=out_default, help="parent folder of run directories (default: runs)")
        sp.add_argument("--records", help="run-record database (default: $SLIMKIT_RECORDS or OUT/records.sqlite)")

    def execution(sp, name_help: str):  # what `run` and `sweep` share
        sp.add_argument("notebook", help="the notebook (.ipynb) to execute, e.g. notebooks/quantize.ipynb")
        sp.add_argument("--device", help="sets the notebook's device parameter, e.g. cpu, cuda "
                        "(on Dask, cuda runs need a worker resource GPU)")
        sp.add_argument("--name", help=name_help)
        sp.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                        help="seconds one cell may run before the run fails")
        sp.add_argument("--kernel", help="Jupyter kernel to run in (default: slimkit, installed on demand)")
        common(sp)

    r = parser("run", "run a notebook headless with papermill and record it",
               "examples:\n  slimkit run notebooks/quantize.ipynb -p bits 4 -p granularity per_group\n"
               "  slimkit run notebooks/flagship.ipynb -f params.yaml --name flagship-long\n\n"
               "Progress (cell i of n, elapsed time) goes to stderr; the run directory holds the output\n"
               "notebook, params.yaml, metrics.json, status.json and an HTML report.")
    execution(r, "run directory name under OUT: letters, digits, '._-' (default: NOTEBOOK-TIMESTAMP-ID); "
                 "an existing one is reused only by a rerun of the same notebook and parameters")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="set a parameter of the notebook (repeatable); the value is typed and checked "
                        "against its parameters cell (see: slimkit params NOTEBOOK)")
    r.add_argument("-f", "--file", help="YAML file of parameters (-p values win)")
    r.add_argument("--no-html", action="store_true", help="skip the HTML report")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_run)

    s = parser("sweep", "run a notebook over a parameter grid",
               "example:\n  slimkit sweep notebooks/quantize.ipynb --grid grid.yaml --workers 2\n"
               "  with grid.yaml:  {params: {timing_rounds: 3}, grid: {bits: [8, 4, 2]}}")
    execution(s, "sweep name and folder under OUT (default: NOTEBOOK-GRID)")
    s.add_argument("--grid", required=True, help="YAML: {params: {...}, grid: {name: [values]}}")
    s.add_argument("--workers", type=int, help="local worker processes (default: cores, at most 4)")
    s.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="where the runs execute: local processes, or a Dask cluster (default: local)")
    s.add_argument("--scheduler", help="Dask scheduler address, with --engine dask")
    s.add_argument("--html", action="store_true", help="also write an HTML report per run")
    s.add_argument("--no-resume", action="store_true", help="rerun runs that already finished")
    s.add_argument("--wait", action="store_true", help="if the same sweep is running, wait for it instead of refusing")
    s.add_argument("--worker-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --engine dask: fail the runs left when no worker was available this long (default 300)")
    s.set_defaults(func=cmd_sweep)

    def filters(sp):
        sp.add_argument("--status", help=STATUS_HELP)
        sp.add_argument("--notebook", help="only runs of notebooks whose name contains this")
        sp.add_argument("--sweep", help="only the runs of this sweep (its --name)")
        sp.add_argument("--where", action="append", metavar="NAME=VALUE",
                        help="only runs with this parameter value, e.g. bits=4 (repeatable)")

    ls = parser("runs", "list recorded runs", RUNS_EPILOG)
    filters(ls)
    ls.add_argument("--limit", type=int, metavar="N", help="at most N runs, the most recent first")
    ls.add_argument("--json", action="store_true", help="print the full records as JSON instead of a table")
    common(ls)
    ls.set_defaults(func=cmd_runs)

    c = parser("compare", "compare runs: a table (csv, markdown) and a plot (html) of their metrics", COMPARE_EPILOG)
    c.add_argument("ids", nargs="*", help="run ids (default: all runs matching the filters)")
    filters(c)
    c.add_argument("--x", metavar="METRIC", help="metric on the x axis (default: the first numeric metric)")
    c.add_argument("--y", metavar="METRIC", help="metric on the y axis (default: the second numeric metric)")
    c.add_argument("--metric", action="append", help="metric column to include (repeatable; default: all)")
    c.add_argument("--compare-out", default="compare", help="folder for compare.csv/.md/.html (default: compare)")
    common(c)
    c.set_defaults(func=cmd_compare)

    pa = parser("params", "show a notebook's parameters, their types, defaults and help",
                "example:\n  slimkit params notebooks/quantize.ipynb")
    pa.add_argument("notebook", help="the notebook (.ipynb)")
    pa.set_defaults(func=cmd_params)

    d = parser("demo", "compress the digits CNN with each method and print a comparison")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--device", default="cpu", help="where latency is measured (default: cpu)")
    d.set_defaults(func=cmd_demo)

    k = parser("kernel", "install the slimkit Jupyter kernel into this environment")
    k.add_argument("--name", default="slimkit", help="kernel name (default: slimkit)")
    k.set_defaults(func=cmd_kernel)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors exit here, before any heavy import
    from ..errors import SlimkitError

    try:
        return args.func(args)
    except SlimkitError as e:
        print(f"slimkit {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs are recorded, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
