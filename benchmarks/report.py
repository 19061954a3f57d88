"""RESULTS.md from the results dictionary (results.json holds the same data, and more)."""
from __future__ import annotations

from typing import Any

from slimkit.hardware import summary
from slimkit.table import markdown


def _mib(b) -> str:
    return f"{b / 2**20:.1f}" if b is not None else "-"


def _kernels(row) -> str:
    """What a runtime that picks kernels itself (OpenVINO) ran the matrix products with."""
    info = row.get("describe", {}).get("info", {})
    if not info.get("matmul_kernels"):
        return ""
    kernels = ", ".join(f"{n} x{c}" for n, c in info["matmul_kernels"].items())
    return f". Matrix products computed in {'/'.join(info['matmul_compute'])}: {kernels}"


def _ms(v) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _setup(d: dict[str, float]) -> str:
    keep = {k: v for k, v in d.items() if v >= 0.05}
    return ", ".join(f"{k} {v:.1f}s" for k, v in keep.items()) or "-"


def minilm_section(r: dict[str, Any]) -> str:
    shapes = r["shapes"]
    header = ["row"] + [f"{s} median ms (p90)" for s in shapes] + [f"x fp32 @{s}" for s in shapes] + [
        f"x limit @{s}" for s in shapes] + ["MiB", "x smaller", "mean cos", "min cos", "top-1", "one-time costs"]
    rows = []
    for name, row in r["rows"].items():
        if "error" in row:
            rows.append([name, f"FAILED: {row['error'][:120]}"] + [""] * (len(header) - 2))
            continue
        lat = row["latency"]
        f = row.get("fidelity", {})
        rows.append([name]
                    + [f"{_ms(lat[s]['median_ms'])} (one call)" if lat[s].get("timed_once") else
                       f"{_ms(lat[s]['median_ms'])} ({_ms(lat[s]['p90_ms'])})" for s in shapes]
                    + [f"{lat[s]['speedup']:.2f}x" for s in shapes]
                    + [f"{lat[s]['x_limit']:.1f}x" if "x_limit" in lat.get(s, {}) else "-" for s in shapes]
                    + [_mib(row.get("size_bytes")) + ("*" if row.get("size_note") else ""),
                       f"{row['size_ratio']:.2f}x" if row.get("size_ratio") else "-",
                       f"{f.get('mean_cosine', float('nan')):.5f}", f"{f.get('min_cosine', float('nan')):.4f}",
                       f"{100 * f.get('top1_agreement', float('nan')):.1f}%"
                       + (f" ({f['n']:.0f} sentences)" if f.get("n") and f["n"] < r.get("sentences", f["n"]) else ""),
                       _setup(row["setup_s"])])
    notes = "\n".join(f"- **{n}**: {row['note']}" + (f" (size: {row['size_note']})" if row.get("size_note") else "")
                      + _kernels(row) for n, row in r["rows"].items() if row.get("note"))
    out = [markdown(header, rows, escape=False), "", "Rows:", notes, "",
           "Latency: median (p90) of alternating rounds in one process, "
           f"{r['threads']} threads; `x fp32` = fp32 eager's median / the row's median, same run. "
           "Size: the deployable artifact (`slimkit.size` / the ONNX file); * = in-memory tensor bytes or "
           "derived. Fidelity: each row computes the embeddings of the bundled sentences itself, at 32 x 128 "
           "(mean/min cosine to fp32, top-1 retrieval agreement)."]
    if r.get("limit_ms"):
        out[-1] += (" `x limit` = the row's median / the physical limit of MiniLM's int8 GEMMs on this CPU ("
                    + ", ".join(f"{k}: {v:.1f} ms" for k, v in r["limit_ms"].items())
                    + f"; assumption: {r.get('limit_note', '?')}).")
    ov = r.get("verdict_openvino", {})
    if ov:
        out += ["", ("**Target (issue 13): slimkit's best int8 row (any backend running slimkit's recipe, mean cosine "
                     ">= 0.998, >= 3.5x smaller) at least as fast as OpenVINO int8 + NNCF.**"), ""]
        if "note" in ov:
            out.append(f"- {ov['note']}")
        for shape, res in ov.items():
            if not isinstance(res, dict):
                continue
            if res.get("slimkit_row") is None:
                out.append(f"- {shape}: NOT MET: {res['note']} (fastest slimkit int8 row: {res.get('fastest_any')}).")
                continue
            out.append(f"- {shape}: **{res['slimkit_row']}** (mean cos {res['slimkit_mean_cos']:.5f}) vs OpenVINO "
                       f"int8 + NNCF (mean cos {res['openvino_mean_cos'] or float('nan'):.5f}): OpenVINO/slimkit "
                       f"latency {res['openvino_over_slimkit']:.2f}x: {'MET' if res['met'] else 'NOT MET'}.")
    v = r.get("verdict", {})
    if v and "note" not in v:
        out += ["", "**Target (issue 3): slimkit's best CPU int8 row Pareto-dominates every ONNX Runtime int8 row.**", ""]
        for shape, res in v.items():
            checks = ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in res["checks"].items())
            out.append(f"- {shape}: **{res['slimkit_row']}** vs **{res['ort_row']}** "
                       f"(ORT/slimkit latency {res['latency_ratio_ort_over_slimkit']:.2f}x) - {checks}. "
                       f"{'MET' if res['met'] else 'NOT MET'}.")
        best = next(iter(v.values()))["slimkit_row"]
        f = r["rows"][best]["fidelity"]
        top1_met = next(iter(v.values())).get("top1_met")
        out += ["", f"**Issue 2's MiniLM target, top-1 agreement >= 99%:** {best} {f['top1_agreement']:.1%}: "
                f"{'met' if top1_met else 'NOT MET'}."]
        if f["top1_misses"]:
            out[-1] += (f" Its {int(f['top1_misses'])} misses of {int(f['n'])} queries are near-ties: the largest "
                        f"reference margin among them (top-1 minus top-2 cosine in fp32) is {f['miss_margin_max']:.4f}. "
                        "The metric is not weakened here: see the bf16 row for the precision it takes to keep those ties.")
    if r.get("ablation"):
        out += ["", "Where the int8 fidelity goes (eager, the same sentences; each variant quantizes only part "
                "of the model, so none of them is 3.9x smaller):", "",
                "| variant | mean cos | min cos | top-1 | misses |", "|---|---|---|---|---|"]
        out += [f"| {name} | {a['mean_cosine']:.5f} | {a['min_cosine']:.4f} | {a['top1_agreement']:.1%} | "
                f"{int(a['top1_misses'])} |" for name, a in r["ablation"].items()]
    return "\n".join(out)


def digits_section(r: dict[str, Any]) -> str:
    header = ["method", "accuracy", "drop (pt)", "bytes", "x smaller", "latency ms", "x faster", "note"]
    rows = [[x["method"], f"{100 * x['accuracy']:.2f}%", f"{x['drop_pts']:+.2f}", f"{x['size_bytes']:,}",
             f"{x['size_ratio']:.2f}x", f"{x.get('latency_ms', float('nan')):.3f}", f"{x.get('speedup', float('nan')):.2f}x",
             x.get("note", "")] for x in r["rows"]]
    return "\n".join([markdown(header, rows, escape=False), "",
                      f"Latency: batch {r['batch']}, {r['threads']} thread, alternating rounds (slimkit.measure); "
                      "`structured 50% + FT` is the real speed-up of physically smaller layers. Deeper study: "
                      f"{r['study']}."])


def scaling_section(r: dict[str, Any], files: dict[str, str]) -> str:
    header = ["axis", "batch x seq"] + [f"{v} ms (x fp32)" for v in dict.fromkeys(p["variant"] for p in r["points"])] + [
        "peak RSS growth MiB (fp32 / int8 / ORT)"]
    by_shape: dict[tuple, list] = {}
    for p in r["points"]:
        by_shape.setdefault((p["axis"], p["batch"], p["seq"]), []).append(p)
    rows = []
    for (axis, b, n), ps in by_shape.items():
        rows.append([axis, f"{b} x {n}"] + [f"{_ms(p['median_ms'])} ({p['speedup']:.2f}x)" for p in ps]
                    + [" / ".join(_mib(p["peak_rss_growth_bytes"]) for p in ps)])
    pics = ["Memory: what one forward pass adds to the resident set above the loaded model, one fresh process per "
            "variant and shape (RSS high-water mark, approximate: a call that fits in memory the process already "
            "holds reads ~0)."]
    if "png" in files:
        pics.append("![scaling](scaling.png)")
    if "html" in files:
        pics.append("Interactive version: `benchmarks/scaling.html` (written by the run, self-contained, not committed).")
    return "\n".join([markdown(header, rows, escape=False), "", *pics])


def cuda_section(r: dict[str, Any]) -> str:
    out = []
    if not r["measured"]:
        out.append(f"**{r['reason']}** on the machine that ran this suite; these rows run when "
                   "`torch.cuda.is_available()` (same command).")
    else:
        out.append(f"Device: {r['device']}.")
    for wname, rows in r["workloads"].items():
        out += ["", f"*{wname}*", ""]
        header = ["row", "median ms (p90)", "x fp32", "cosine vs fp32", "status"]
        out.append(markdown(header, [[n, f"{_ms(x['median_ms'])} ({_ms(x['p90_ms'])})" if "median_ms" in x else "-",
                                      f"{x['speedup']:.2f}x" if x.get("speedup") else "-",
                                      f"{x['cosine_vs_fp32']:.5f}" if "cosine_vs_fp32" in x else "-", x["status"]]
                                     for n, x in rows.items()], escape=False))
    return "\n".join(out)


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = ["# slimkit benchmarks", "",
             f"Command: `{meta['command']}` ({'QUICK smoke run: numbers are not meaningful' if meta['quick'] else 'full run'}), "
             f"{meta['started']}, {meta['seconds']:.0f} s.",
             f"Machine: {summary(results['fingerprint'])}.",
             f"Load average at start / end: {meta['load_start']} / {meta['load_end']} "
             "(a shared machine inflates absolute times; ratios are measured side by side).", ""]
    sec = results["sections"]
    if "minilm" in sec:
        cap = sec["minilm"].get("cpu_capability")
        parts += ["## 1. MiniLM (all-MiniLM-L6-v2) on the CPU", "",
                  f"CPU path: torch capability **{cap}**; "
                  f"{'VNNI' if any('vnni' in f for f in results['fingerprint'].get('cpu_flags', [])) else 'no VNNI'} "
                  "(int8 kernels and the limit column depend on it).", "", minilm_section(sec["minilm"]), ""]
    if "digits" in sec:
        parts += ["## 2. Digits CNN", "", digits_section(sec["digits"]), ""]
    if "scaling" in sec:
        parts += ["## 3. Scaling with batch size and sequence length", "",
                  scaling_section(sec["scaling"], results.get("files", {})), ""]
    if "cuda" in sec:
        parts += ["## 4. CUDA", "", cuda_section(sec["cuda"]), ""]
    for name, err in results.get("errors", {}).items():
        parts += [f"Section {name} FAILED: `{err}`", ""]
    parts += ["## Fingerprint", "", "Full record in `results.json` (`fingerprint`): "
              + ", ".join(f"{k}={results['fingerprint'].get(k)}" for k in
                          ("cpu_model", "cpu_usable_cores", "cpu_flags", "virtualized", "memory_bytes", "os",
                           "torch_build", "cuda_available")), ""]
    return "\n".join(parts)
