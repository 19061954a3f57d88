"""The ``slimkit`` command: headless notebook runs, sweeps, run records, comparisons, the demo.

    slimkit run NOTEBOOK -p NAME VALUE ... [-f params.yaml] [--device cuda] [--out runs/]
    slimkit sweep NOTEBOOK --grid grid.yaml [--workers N] [--engine dask --scheduler ADDRESS]
    slimkit runs [--status failed] [--sweep NAME] [--where bits=4]
    slimkit compare [RUN_ID ...] [--sweep NAME] [--x size_bytes --y accuracy] [--out compare/]
    slimkit params NOTEBOOK        # the notebook's parameters, types, defaults and help
    slimkit demo                   # compress the digits CNN with each method; print a table

Exit status: 0 success, 1 a run failed, 2 bad input (the message says which parameter and why)
or a sweep already running, 130 interrupted (Ctrl-C or SIGTERM; rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, SlimkitError
from ..events import Status


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


def cmd_run(args) -> int:
    from .runner import plan_run, run_spec

    _check_device(args.device)
    spec = plan_run(args.notebook, _params(args), out=args.out, name=args.name, device=args.device,
                   cell_timeout=args.cell_timeout, html=not args.no_html, kernel_name=args.kernel)
    with _store(args) as store:  # opened only once the parameters are known to be good
        record = run_spec(spec, store)
    print(f"{record.status}: {record.output_dir} ({record.duration_s:.1f} s)")
    if record.error:
        print(f"error: {record.error}", file=sys.stderr)
    return 0 if record.status == Status.OK else 1


def cmd_sweep(args) -> int:
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
                 cell_timeout=args.cell_timeout, html=args.html, kernel_name=args.kernel)
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


def build_parser() -> argparse.ArgumentParser:
    from .kernel import KERNEL_NAME
    from .records import STATUSES

    p = argparse.ArgumentParser(prog="slimkit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, out_default="runs"):
        sp.add_argument("--out", default=out_default, help="parent folder of run directories (default: runs)")
        sp.add_argument("--records", help="run-record database (default: $SLIMKIT_RECORDS or OUT/records.sqlite)")

    def execution(sp, name_help: str):  # what `run` and `sweep` share
        sp.add_argument("notebook")
        sp.add_argument("--device", help="sets the notebook's `device` parameter, e.g. cpu, cuda "
                        "(on Dask, cuda runs need a worker resource GPU)")
        sp.add_argument("--name", help=name_help)
        sp.add_argument("--cell-timeout", type=float, help="seconds one cell may run before the run fails")
        sp.add_argument("--kernel", default=KERNEL_NAME, help="kernelspec (default: slimkit, installed on demand)")
        common(sp)

    r = sub.add_parser("run", help="run a notebook headless with papermill and record it")
    execution(r, "run directory name under OUT: letters, digits, '._-' (default: NOTEBOOK-TIMESTAMP-ID); "
                 "an existing one is reused only by a rerun of the same notebook and parameters")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"))
    r.add_argument("-f", "--file", help="YAML file of parameters (-p values win)")
    r.add_argument("--no-html", action="store_true", help="skip the HTML report")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("sweep", help="run a notebook over a parameter grid")
    execution(s, "sweep name and folder under OUT (default: NOTEBOOK-GRID)")
    s.add_argument("--grid", required=True, help="YAML: {params: {...}, grid: {name: [values]}}")
    s.add_argument("--workers", type=int, help="local worker processes (default: cores, at most 4)")
    s.add_argument("--engine", choices=("local", "dask"), default="local")
    s.add_argument("--scheduler", help="Dask scheduler address, with --engine dask")
    s.add_argument("--html", action="store_true", help="also write an HTML report per run")
    s.add_argument("--no-resume", action="store_true", help="rerun runs that already finished")
    s.add_argument("--wait", action="store_true", help="if the same sweep is running, wait for it instead of refusing")
    s.add_argument("--worker-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --engine dask: fail the runs left when no worker was available this long (default 300)")
    s.set_defaults(func=cmd_sweep)

    def filters(sp):
        sp.add_argument("--status", choices=STATUSES)
        sp.add_argument("--notebook", help="notebook name contains this")
        sp.add_argument("--sweep")
        sp.add_argument("--where", action="append", metavar="NAME=VALUE", help="parameter filter (repeatable)")

    ls = sub.add_parser("runs", help="list recorded runs")
    filters(ls)
    ls.add_argument("--limit", type=int)
    ls.add_argument("--json", action="store_true")
    common(ls)
    ls.set_defaults(func=cmd_runs)

    c = sub.add_parser("compare", help="comparison table (csv, markdown) and plot (html) of runs")
    c.add_argument("ids", nargs="*", help="run ids (default: all runs matching the filters)")
    filters(c)
    c.add_argument("--x", help="metric on the x axis")
    c.add_argument("--y", help="metric on the y axis")
    c.add_argument("--metric", action="append", help="metric column to include (repeatable; default: all)")
    c.add_argument("--compare-out", default="compare", help="folder for compare.csv/.md/.html")
    common(c)
    c.set_defaults(func=cmd_compare)

    pa = sub.add_parser("params", help="show a notebook's parameters")
    pa.add_argument("notebook")
    pa.set_defaults(func=cmd_params)

    d = sub.add_parser("demo", help="compress the digits CNN with each method and print a comparison")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=cmd_demo)

    k = sub.add_parser("kernel", help="install the `slimkit` Jupyter kernel into this environment")
    k.add_argument("--name", default=KERNEL_NAME)
    k.set_defaults(func=cmd_kernel)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
