"""Assemble benchmarks/RESULTS.md from the JSON files the benchmark scripts wrote.

usage: python benchmarks/report.py       (after cost.py, speed.py and quality.py)

Every figure in RESULTS.md comes from results/*.json; the targets and what the
numbers mean are stated next to them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, table  # noqa: E402

HERE = Path(__file__).parent


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def machine_line(m: dict) -> str:
    dev = m.get("gpu", m["device"])
    cpu = f" ({m['cpu']})" if m.get("cpu") else ""
    return f"{m['date']}, {m['cpu_cores']} CPU cores{cpu}, device {dev}, torch {m['torch']}, {m['threads']} threads"


def alpha_label(alpha) -> str:
    return "" if alpha in (None, "-") else f" α={alpha}"


def processes_note(sp: dict) -> str:
    """How many processes a speed run measured in, and which one its table is."""
    runs = sp.get("processes")
    if not runs:
        return "; one process."
    env = " ".join(f"{k}={v}" for k, v in sp.get("malloc_env", {}).items())
    return (f"; measured in {len(runs)} fresh processes one after the other, the table is the process with the median "
            f"shortcut-frame speed-up" + (f"; run with {env}" if env else "") + ".")


def process_ranges(sp: dict) -> list[str]:
    """The ratios of every process of a multi-process speed run (see speed.py ``--processes``)."""
    runs = sp.get("processes")
    if not runs:
        return []
    sec = [r["seconds"] for r in runs]
    teacher = ", ".join(f"{t['teacher'] * 1e3:.0f}" for t in sec)
    shortcut = ", ".join(f"{t['shortcut'] * 1e3:.0f}" for t in sec)
    speedup = ", ".join(f"{t['teacher'] / t['shortcut']:.2f}×" for t in sec)
    amort = ", ".join(f"{t['teacher'] / t['amortised']:.2f}×" for t in sec)
    share = ", ".join(f"{r['block_share']:.1%}" for r in runs)
    memory = ", ".join(f"{r['memory_mib']['shortcut']:.0f}/{r['memory_mib']['teacher']:.0f}" for r in runs)
    lines = [
        "Every process (the teacher's time, and with it the ratios, differs between processes: speed.py's docstring says why):",
        "",
        f"- teacher ms: {teacher}; shortcut frame ms: {shortcut}",
        f"- shortcut frame speed-up: {speedup}; amortised at α = 3: {amort}; block share: {share}",
        f"- peak memory, shortcut frame / teacher (MiB): {memory}",
    ]
    for tag in runs[0].get("compared") or {}:
        ratios = ", ".join(f"{r['compared'][tag]['shortcut'] / r['seconds']['shortcut']:.2f}×" for r in runs)
        shares = ", ".join(f"{r['compared'][tag]['block'] / r['compared'][tag]['shortcut']:.1%}" for r in runs)
        lines.append(f"- side by side, {tag}, shortcut frame over the default's: {ratios}; its block share: {shares}")
    return lines + [""]


def speed_command(sp: dict, *extra: str) -> str:
    """The speed.py command line that made ``sp``: its ``--compare`` layouts from what it recorded."""
    specs = []
    for c in (sp.get("compared") or {}).values():
        prior = c.get("motion_prior")
        specs.append(f"{c['resolution']}:{c['width']}" + ("" if not prior else "+prior" if prior == "local" else f"+{prior}"))
    chosen = [f"--resolution {sp['requested']}"] if sp.get("requested", "auto") != "auto" else []
    chosen += [f"--taps {sp['taps']}"] if sp.get("taps", "paper") != "paper" else []
    return " ".join(["python benchmarks/speed.py", *extra, *chosen] + (["--compare", *specs] if specs else []))


def taps_command(r: dict, *extra: str) -> str:
    """The taps.py command line that made ``r``: its seeds, steps and extra pairs from what it recorded."""
    named = {"first choice", "paper's taps", "first choice = paper's taps"}
    pairs = list(dict.fromkeys(f"{x['enc']}:{x['dec']}" for x in r.get("runs", []) if x.get("label") not in named))
    args = ["python benchmarks/taps.py", *extra]
    args += [f"--seeds {r['seeds']}"] if r.get("seeds", 2) != 2 else []
    args += [f"--steps {r['steps']}"] if r.get("steps", 300) != 300 else []
    args += ["--extra", *pairs] if pairs else []
    return " ".join(args)


def ci_benchmark_commands() -> list[str]:
    """The benchmark commands ``.ci/run`` runs (their quick modes), as it lists them."""
    ci = HERE.parent / ".ci" / "run"
    if not ci.exists():
        raise SystemExit(f"{ci} is missing: RESULTS.md lists the quick benchmarks CI runs from it")
    return [line.split("#")[0].strip() for line in ci.read_text().splitlines() if line.startswith("python benchmarks/")]


def keep_memory_lines(sp: dict | None) -> list[str]:
    """The same measurement with glibc's malloc keeping freed memory (speed.py ``--keep-memory``)."""
    if not sp:
        return []
    t = sp["seconds"]
    env = " ".join(f"{k}={v}" for k, v in sp.get("malloc_env", {}).items())
    return [
        f"With malloc keeping freed memory (`{speed_command(sp, '--keep-memory')}`, {sp['machine']['date']}: {env}; "
        "large feature maps then reuse freed pages instead of faulting in fresh ones, as jemalloc or tcmalloc would) the "
        f"median process: teacher {t['teacher'] * 1e3:.0f} ms, shortcut frame {t['shortcut'] * 1e3:.0f} ms "
        f"({t['teacher'] / t['shortcut']:.2f}×), amortised {t['teacher'] / t['amortised']:.2f}×, block share {sp['block_share']:.1%}.",
        "",
        *process_ranges(sp),
    ]


def suggested_taps_lines(sp: dict | None) -> list[str]:
    """The same measurement at the tap pair suggest_taps ranks first on a trained teacher (speed.py ``--taps suggested``)."""
    if not sp:
        return []
    t, mem = sp["seconds"], sp["memory_mib"]
    enc, dec = sp["tap_pair"]
    return [
        f"At the tap pair `suggest_taps` ranks first on the trained cartoon teacher (`python benchmarks/speed.py --taps suggested`, "
        f"{sp['machine']['date']}: `{enc} → {dec}`; block {sp['resolution']}, width "
        f"{sp['block_width']}; the same generator and frame) the median process: teacher {t['teacher'] * 1e3:.0f} ms, shortcut frame "
        f"{t['shortcut'] * 1e3:.0f} ms ({t['teacher'] / t['shortcut']:.2f}×), amortised {t['teacher'] / t['amortised']:.2f}×, "
        f"block share {sp['block_share']:.1%}, peak memory shortcut frame / teacher {mem['shortcut']:.0f} / {mem['teacher']:.0f} MiB. "
        "The targets below are judged at the paper's taps (the table above).",
        "",
        *process_ranges(sp),
    ]


def memory_cell(sp: dict, path: str = "shortcut") -> str:
    """A path's peak memory (MiB) from a speed run, or a mark where the run counted it the old way
    (before 0.12, CPU: ops' self memory in start order, which undercounted ops with large temporaries)."""
    if sp.get("memory_method") is None and not sp["machine"].get("device", "cpu").startswith("cuda"):
        return "(old count)"
    return f"{sp['memory_mib'][path]:.0f}"


def resolution_section(speed: dict | None, speed_half: dict | None, speed_full: dict | None,
                       q: dict | None, q_half: dict | None, q_full: dict | None) -> list[str]:
    """The block layouts side by side: speed (ResNet ngf=64, 256²) and quality at α = 3; the default
    (``resolution="auto"``) first."""
    if not (speed and speed_full):
        return []

    started: set[str] = set()  # versions of the quality runs shown whose distill made the data-dependent start

    def quality_cells(qu: dict | None, missing: str = "not run") -> list[str]:
        cells = []
        mark = ""
        if qu and qu.get("start"):  # recorded since 0.16; runs before record none and were distilled as built (0.10-0.13)
            started.add(f"of the {qu['start']} tap's reduction, version {qu['version']}")
            mark = "*"
        for video in ("bikes (held-out frames)", "carphone (held-out video)"):
            r = next((r for r in (qu or {"results": []})["results"] if r["video"] == video and r["method"] == "Shortcut-V2V" and r["alpha"] == 3), None)
            cells.append(f"{r['psnr']:.2f}{mark}" if r else missing)
        return cells

    auto_widths = {"half": (speed_half or {}).get("block_width"), "full": speed_full["block_width"]}
    default = f"{speed.get('resolution', 'half')}, width {speed['block_width']}"
    rows = []
    for label, sp, qu in ((f"auto (default): {default}", speed, q), ("half (the default of 0.10)", speed_half, q_half),
                          ("full (the paper's)", speed_full, q_full)):
        if not sp:
            continue
        t = sp["seconds"]
        cells = [label, f"{t['teacher'] / t['shortcut']:.2f}×", f"{t['teacher'] / t['amortised']:.2f}×",
                 f"{sp['block_share']:.0%}", memory_cell(sp), *quality_cells(qu)]
        rows.append("| " + " | ".join(cells) + " |")

    def at_width(res: str, width: int) -> tuple[str, str, str]:
        """Quality cells (bikes, carphone) of the quality run at the same fraction of its layout's automatic
        width, and a label note."""
        auto = auto_widths.get(res)
        if width == auto:
            bikes, car = quality_cells(q_half if res == "half" else q_full, "-")
            return bikes, car, ""
        qu = next((x for x in (json.loads(f.read_text()) for f in sorted(RESULTS.glob(f"quality_{res}_w*.json")) if not f.stem.endswith("_quick"))
                   if auto and x.get("auto_width") and x["block_width"] * auto == width * x["auto_width"]), None)
        bikes, car = quality_cells(qu, "-")
        return bikes, car, f" (quality: width {qu['block_width']} of {qu['auto_width']})" if qu else ""

    for path in sorted(RESULTS.glob("speed_cpu*_w*.json")):
        if path.stem.endswith("_quick"):
            continue
        sp = json.loads(path.read_text())
        t = sp["seconds"]
        res = sp.get("resolution", "half")
        bikes, car, note = at_width(res, sp["block_width"])
        rows.append(f"| {res}, width {sp['block_width']}{note} | {t['teacher'] / t['shortcut']:.2f}× | "
                    f"{t['teacher'] / t['amortised']:.2f}× | {sp['block_share']:.0%} | {memory_cell(sp)} | {bikes} | {car} |")
    side = []
    for tag, c in (speed.get("compared") or {}).items():
        t = speed["seconds"]
        # a block with the motion prior: no quality run of it at this width
        bikes, car, note = ("-", "-", "") if c.get("motion_prior") else at_width(c["resolution"], c["width"])
        side.append(f"| {tag}{note} | {t['teacher'] / c['shortcut']:.2f}× | - | {c['block'] / c['shortcut']:.0%} | - | {bikes} | {car} |")
    if side:
        bikes, car = quality_cells(q, "-")
        rows.append(f"| **side by side in the run of the first row** (`--compare`): {default} (default) | "
                    f"{speed['seconds']['teacher'] / speed['seconds']['shortcut']:.2f}× | - | {speed['block_share']:.0%} | - | {bikes} | {car} |")
        rows += side
    return [
        "## Block resolution: speed against quality",
        "",
        "`shortcutify(..., resolution=\"auto\" | \"half\" | \"full\")`. Speed: `python benchmarks/speed.py [--resolution half|full] "
        "[--compare half full]`",
        "(ResNet ngf=64, 6 blocks, 256×256, 2 threads); quality: `python benchmarks/quality.py [--resolution half|full] [--width W --no-student]`",
        "(cartoon teacher, PSNR vs the teacher at α = 3 on held-out frames). `auto` (the default since 0.11) builds the full layout "
        "at half the half layout's width on these taps (`shortcutify.core.blocks.sizing.auto_layout`). Each layout at its automatic "
        f"width ({auto_widths['half']} and {auto_widths['full']} for the speed model) unless stated (`--width W`; a width row's "
        "quality is the run at the same fraction of the cartoon teacher's automatic width). The rows above \"side by side\" are "
        "separate runs, and this machine's speed drifts between runs by more than the layouts differ: compare layouts within one run.",
        "",
        "| block | shortcut frame speed-up | amortised α=3 | block share | shortcut peak MiB | bikes PSNR | carphone PSNR |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *([f"*: distilled with `distill`'s data-dependent start ({', '.join(sorted(started))}); PSNR without a mark: blocks "
           "distilled as built (runs of 0.10 to 0.13, one seed each). Compare quality only between rows of one start: the start "
           "alone lifts a block by about as much as the layouts differ (section \"Block ablation\", 3 seeds each).", ""]
          if started else []),
        *_why_auto_is_default(),
        "",
    ]


def _why_auto_is_default() -> list[str]:
    """Why the default is ``resolution="auto"``, from the measurements at hand: the two layouts timed side by
    side on a GPU (gpu.py's ``full-w2``) and on CPU per teacher (distill_teachers.py --time-blocks)."""
    lines = [
        "Why `auto`: one layout serves every device (a block distilled in one layout cannot run as the other), so the "
        "default was chosen on both. On wide taps the full layout at half the half layout's width costs about the same "
        "MACs and distils to better blocks (sections \"Block ablation\" and \"Distillation over many teachers\"); on CPU "
        "it costs a few percent more time per shortcut frame (rows \"side by side\" above, timed in the same rounds; "
        "`python benchmarks/ablation.py --time-blocks`, column \"CPU ms\" there, at 136×320)."
    ]
    ratios = gpu_layout_ratios()
    if ratios:
        lo, hi = min(ratios.values()), max(ratios.values())
        worst = max(ratios, key=ratios.get)
        lines.append(
            f"On a GPU (section \"GPU\", runs {', '.join(f'`{t}`' for t in GPU_LAYOUT_RUNS)}) it took {lo:.2f}–{hi:.2f}× the half "
            f"block's time per shortcut frame over {len(ratios)} pairs (configuration and run), each pair timed in the same run "
            f"(the most: {worst}).")
    sp = load("distill_teachers_speed")
    if sp and all({"half", "defaults"} <= set(t["variants"]) for t in sp["teachers"].values()):
        kept = {n: t["variants"] for n, t in sp["teachers"].items() if t["variants"]["defaults"]["resolution"] == "half"}
        ratios = [v["full-half-width-min8"]["block_macs"] / v["half"]["block_macs"] for v in kept.values() if "full-half-width-min8" in v]
        if kept:
            lines.append("On taps too narrow for the halved width (" + ", ".join(sorted(kept)) + " in \"Distillation over many "
                         "teachers\") `auto` keeps the half layout" + (f": there the full one, no narrower than 8, costs "
                         f"{min(ratios):.1f}–{max(ratios):.1f}× its MACs." if ratios else "."))
    return [" ".join(lines)]


#: the gpu.py runs that timed the half layout against the full one at half width, side by side
GPU_LAYOUT_RUNS = ("gpu_run6", "gpu_run7", "gpu_run8")


def gpu_layout_ratios() -> dict[str, float]:
    """Per GPU configuration and run (:data:`GPU_LAYOUT_RUNS`), the shortcut frame's time with the full layout
    at half width (``full-w2``) over the half layout's, both from the same gpu.py run."""
    out: dict[str, float] = {}
    for tag in GPU_LAYOUT_RUNS:
        r = load(tag)
        if not r:
            continue
        rows = {(x["config"], x["resolution"]): x for x in r["rows"]}
        for (config, res), x in rows.items():
            if res == "half" and (config, "full-w2") in rows:
                out[f"{config} ({tag.removeprefix('gpu_')})"] = rows[(config, "full-w2")]["ms"]["shortcut"] / x["ms"]["shortcut"]
    return out


def _speedup_table(r: dict, label: str, head: str, suffix: str = "") -> list[str]:
    """A channels × sizes grid of cpu_gather.py as a table: a column per size, a row per channel count
    (``suffix``: the measurement of that name, e.g. ``"_planar"``)."""
    sizes = sorted({row["size"] for row in r["rows"]})
    cells = {(row["channels"], row["size"]): row for row in r["rows"]}
    rows = []
    for c in sorted({row["channels"] for row in r["rows"]}):
        line = [f"{label} = {c}"]
        for size in sizes:
            row = cells.get((c, size))
            many = row.get("speedups" + suffix, []) if row is not None else []
            spread = f" ({min(many):.2f}..{max(many):.2f})" if len(many) > 1 else ""
            line.append("-" if row is None else f"{row['speedup' + suffix]:.2f}×{spread}" + (" **g**" if row["dispatched" + suffix] else ""))
        rows.append("| " + " | ".join(line) + " |")
    return [f"| {head} | " + " | ".join(f"{s}×{s}" for s in sizes) + " |", "|---|" + "---|" * len(sizes), *rows, ""]


def _processes(r: dict) -> str:
    return f", the median over {r['processes']} fresh processes (their range in brackets)" if r.get("processes", 1) > 1 else ", one process"


def cpu_gather_section() -> list[str]:
    """AdaBD on CPU: the gather path against the reference over channels × map sizes (benchmarks/cpu_gather.py)."""
    r = load("cpu_gather")
    if not r:
        return []
    return [
        "## AdaBD on CPU: row gathers against the reference",
        "",
        f"`python benchmarks/cpu_gather.py` — {machine_line(r['machine'])}. `adabd_conv_reference` (one `grid_sample` for the",
        "deformed reference's columns, a strided view for the current frame's, a `lerp` and one matrix product) against",
        "`adabd_conv_gather` (both features as one table of channel rows, one `embedding_bag` of five weighted rows per",
        "output pixel and tap, one matrix product) on the same values (batch 1, 3×3, inference), interleaved; each cell:",
        "the reference's median time over the gather's (above 1: the gather is faster)" + _processes(r) + ". The reference reads",
        "contiguous memory; the gather, in the first table, channels-last memory, as the full block gives it since 0.19 (its",
        "product then writes channel rows; `ROWS_MIN_CHANNELS`, `ROWS_MIN_VALUES` in `shortcutify/ops/gather.py` are chosen",
        "from this table), and in the second contiguous memory (the half block's and other callers' case; `MIN_CHANNELS`,",
        "`MIN_PIXELS`). **g**: the cells `adabd_conv` sends to the gather; below them the gather's fixed cost of some forty",
        "small index ops outweighs what it saves.",
        "",
        *_speedup_table(r, "h", "width, channels-last operands"),
    ] + ([*_speedup_table(r, "h", "width, contiguous operands", "_planar")] if "speedup_planar" in r["rows"][0] else []) + _warp_gather_section() + _chunks_section() + _pointwise_section()


def _prior_share_text() -> str:
    """The block's share of a shortcut frame with the motion prior, over the processes of the last speed run."""
    sp, tag = load("speed_cpu"), "full, width 32, motion prior"
    shares = [r["compared"][tag]["block"] / r["compared"][tag]["shortcut"] for r in (sp or {}).get("processes", []) if tag in r.get("compared", {})]
    if not shares:
        return "not measured in the last speed run"
    within = "within it in every process" if max(shares) <= 0.25 else "not in every process"
    return (f"the block's share of a shortcut frame with the prior is {min(shares):.1%}–{max(shares):.1%} over the processes of the "
            f"last run ({sp['machine']['date']}; the target is 25%: {within}; shares differ from run to run by a few points)")


def _pointwise_section() -> list[str]:
    """The full block's reconstruction on CPU: ``pointwise_conv_add`` against the plain sum (cpu_gather.py --pointwise)."""
    r = load("cpu_gather_pointwise")
    if not r:
        return []
    cells = sorted({(row["channels"], row["size"]) for row in r["rows"]})
    chunks = sorted({row["chunk"] for row in r["rows"]})
    by = {(row["channels"], row["size"], row["chunk"]): row for row in r["rows"]}
    default = next((row["chunk"] for row in r["rows"] if row["default"]), None)
    lines = [
        f"The full block's reconstruction (`python benchmarks/cpu_gather.py --pointwise` — {machine_line(r['machine'])}): since 0.19",
        "the full block runs its inside in channels-last memory for CPU inference, and its last step, a 1×1 conv from 32",
        "channels plus the warped decoder tap (a channel slice of the channels-last reference stack), must come out",
        "contiguous for the tail. The plain sum (`(conv2d(x) + residual).contiguous()`, which ends in a whole-map",
        "transpose) against `pointwise_conv_add` (`shortcutify/ops/pointwise.py`: per chunk of pixels one `addmm` into the",
        "residual's rows, then a transposed write while they are in cache) at several chunk sizes (`PIXELS_PER_CHUNK`),",
        "interleaved in rotating order; each cell: the plain sum's median time over the op's (above 1: the op is faster),",
        f"median of {len(r['rows'][0].get('speedup_passes', [0]))} passes and their range. Default chunk: {default} pixels; "
        "**d**: maps the op takes its chunked path on (`MIN_PIXELS`, chosen from this table; below it the plain sum runs).",
        "",
        "| output channels | map | " + " | ".join(f"chunk {c}" for c in chunks) + " |",
        "|---|---|" + "---|" * len(chunks),
    ]
    for ch, size in cells:
        row0 = by[(ch, size, chunks[0])]
        mark = " **d**" if row0.get("dispatched") else ""
        lines.append(f"| {ch} | {size}×{size}{mark} | " + " | ".join(
            f"{by[(ch, size, c)]['speedup']:.2f}× ({min(by[(ch, size, c)]['speedup_passes']):.2f}..{max(by[(ch, size, c)]['speedup_passes']):.2f})"
            for c in chunks) + " |")
    return lines + [""]


def _warp_gather_section() -> list[str]:
    """The warp on CPU: ``warp_gather`` against ``warp_reference`` (cpu_gather.py --warp)."""
    r = load("cpu_gather_warp")
    if not r:
        return []
    return [
        f"The warp (`python benchmarks/cpu_gather.py --warp` — {machine_line(r['machine'])}): `warp_reference` (one `grid_sample`)",
        "against `warp_gather` (one `embedding_bag` of the four bilinear corners' channel rows per output pixel) on channels-last",
        "maps with a flow of about 2 px (batch 1, inference), interleaved; each cell as above" + _processes(r) + ". **g**: the cells",
        "`warp` sends to the gather (channels-last float input, at least `MIN_CHANNELS` channels and `MIN_WARP_ELEMENTS` values",
        "per sample, chosen from this table). 192 channels: the full layout's reference stack on the speed benchmark's generator.",
        "",
        *_speedup_table(r, "C", "channels"),
    ]


def ratio_cell(row: dict | None) -> str:
    """A chunk budget's time over the unchunked op's: the median of the passes and their range."""
    if row is None:
        return "-"
    passes = row.get("vs_none_passes", [row["vs_none"]])
    return f"{row['vs_none']:.2f}×" + (f" ({min(passes):.2f}..{max(passes):.2f})" if len(passes) > 1 else "")


def _chunks_section() -> list[str]:
    """The gather's chunk budget (``CHUNK_BYTES``): time per budget against no chunking (cpu_gather.py --chunks)."""
    r = load("cpu_gather_chunks")
    if not r:
        return []
    sizes = sorted({row["size"] for row in r["rows"]})
    budgets = list(dict.fromkeys(row["budget"] for row in r["rows"]))
    cells = {(row["budget"], row["size"]): row for row in r["rows"]}
    default = next((row["budget"] for row in r["rows"] if row["default"]), None)
    lines = [
        f"Chunk budget (`python benchmarks/cpu_gather.py --chunks` — {machine_line(r['machine'])}): the gather computes its "
        "output a chunk of rows at a time, gathering at most `CHUNK_BYTES` of columns per chunk (its working set, columns, "
        "sample positions and bags, is about twice that); width 32, 3×3; each cell: median time over the unchunked op's "
        "(below 1: faster), measured with the budgets interleaved in rotating order, the first call of each budget per round "
        "untimed (the allocator's reuse of freed memory otherwise favours whichever ran just before); median of the passes "
        f"(the whole measurement repeated) and their range. The passes of one run agree, but separate runs (processes) "
        f"have disagreed by more than the budgets differ: read the ratios as one process's. Default: {default}.",
        "",
        "| budget | " + " | ".join(f"{s}×{s} ({cells[(budgets[-1], s)]['columns_mib']:.0f} MiB of columns)" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for b in budgets:
        lines.append(f"| {b}{' (default)' if b == default else ''} | "
                     + " | ".join(ratio_cell(cells.get((b, s))) for s in sizes) + " |")
    return lines + [""]


DI = " + data_init"  # the ablation rows of runs with distill's data-dependent start


def ablation_section() -> list[str]:
    """Short distillations of several block configurations (benchmarks/ablation.py), per seed and mean."""
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("ablation_*_s*.json"))]
    if not runs:
        return []
    speed = load("ablation_speed")
    times = {(t["resolution"], t["width"]): t for t in speed["rows"]} if speed else {}
    groups: dict[tuple[int, str, int], list[dict]] = {}
    for r in runs:  # runs with the data-dependent start (ablation.py --data-init) are rows of their own
        groups.setdefault((r["steps"], r["resolution"] + (DI if r.get("data_init") else ""), r["width"]), []).append(r)
    videos = ("bikes (held-out frames)", "carphone (held-out video)")

    def mean_psnr(rs: list[dict], v: str) -> float:
        return sum(r["results"][v]["psnr"] for r in rs) / len(rs)

    def differences(a: list[dict], b: list[dict]) -> str:
        """Mean PSNR of runs ``a`` minus that of runs ``b``, per video."""
        return ", ".join(f"{v.split(' ')[0]} {mean_psnr(a, v) - mean_psnr(b, v):+.2f} dB" for v in videos)

    rows = []
    for (steps, res, width), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "half", kv[0][2])):
        rs = sorted(rs, key=lambda r: r["seed"])
        t = times.get((res.removesuffix(DI), width))
        cells = [str(steps), res, str(width), f"{rs[0]['block_macs'] / 1e9:.3f}",
                 f"{t['block_ms']:.1f} / {t['shortcut_ms']:.1f}" if t else "-", ", ".join(str(r["seed"]) for r in rs)]
        for v in videos:
            vals = [r["results"][v]["psnr"] for r in rs]
            cells.append(" / ".join(f"{x:.2f}" for x in vals) + f" (mean {sum(vals) / len(vals):.2f}, spread {max(vals) - min(vals):.2f})")
        rows.append("| " + " | ".join(cells) + " |")
    r0 = runs[0]
    repeat = " / ".join(f"{r0['results'][v]['psnr_repeat']:.2f}" for v in videos)
    gaps = []
    for (steps, res, width), rs in sorted(groups.items()):
        full = groups.get((steps, "full", width))
        if res != "half" or not full:
            continue
        few = "" if min(len(rs), len(full)) >= 3 else " (fewer than 3 seeds: indicative only, seeds have differed by up to 2 dB)"
        gaps.append(f"- {steps} steps, width {width}, {len(rs)} and {len(full)} seeds: full − half = {differences(full, rs)}{few}.")
    for (steps, res, width), rs in sorted(groups.items()):
        narrow = groups.get((steps, "full", width // 2))
        if res != "half" or not narrow:
            continue
        few = "" if min(len(rs), len(narrow)) >= 3 else " (fewer than 3 seeds: indicative only)"
        t_half, t_narrow = times.get(("half", width)), times.get(("full", width // 2))
        cost = (f" at {t_narrow['shortcut_ms'] / t_half['shortcut_ms']:.2f}x half's CPU time per shortcut frame"
                if t_half and t_narrow else "")
        gaps.append(f"- {steps} steps, at about equal CPU time: full at width {width // 2} − half at width {width} "
                    f"({len(narrow)} and {len(rs)} seeds) = {differences(narrow, rs)}{cost}{few}.")
    default_gaps = []
    for (steps, res, width), rs in sorted(groups.items()):  # the default block of 0.11 on these taps: full at half width
        wide = groups.get((steps, res, 2 * width))
        if res not in ("full", "full" + DI) or not wide or ("half", 2 * width) not in {(k[1], k[2]) for k in groups}:
            continue
        few = "" if min(len(rs), len(wide)) >= 3 else " (fewer than 3 seeds: indicative only)"
        start = ", both with the data-dependent start" if res.endswith(DI) else ", both as built"
        judged = ""
        if steps == 2000 and res.endswith(DI) and not few:  # distill's default start: the target's setting
            worst = max(mean_psnr(wide, v) - mean_psnr(rs, v) for v in videos)
            judged = f": target (≤ 0.5 dB on each video) {verdict(worst <= 0.5)}"
        default_gaps.append(f"- {steps} steps{start}: full at width {2 * width} − full at width {width} ({len(wide)} and {len(rs)} seeds) = "
                            f"{differences(wide, rs)}{few}{judged}.")
    if gaps:
        gaps = ["Gap of the half layout (the default of 0.10) to `resolution=\"full\"`, means over seeds:", "", *gaps, ""]
    if default_gaps:
        gaps += ["Gap of the default block of 0.11 on these taps (`resolution=\"auto\"`: full at half the half layout's width) to "
                 "`resolution=\"full\"` at the paper's width, means over seeds (issue 12's target: within 0.5 dB at 2000 steps over "
                 "≥ 3 seeds; only the step counts listed were run):", "", *default_gaps, ""]

    variants = []
    for (steps, res, width), rs in sorted(groups.items()):
        if res in ("half", "full"):
            continue
        bases = (res.removesuffix(DI),) if res.endswith(DI) else ("half", "full")  # a data-init row: against its start as built
        parts = [f"{base} ({len(groups[(steps, base, width)])} seeds): {differences(rs, groups[(steps, base, width)])}"
                 for base in bases if (steps, base, width) in groups]
        if parts:
            variants.append(f"- {res}, {steps} steps, width {width}, {len(rs)} seeds, against " + "; against ".join(parts) + ".")
    if variants:
        gaps += ["Experimental layouts against the built-in ones, and rows with the data-dependent start against the same block "
                 "as built, at equal width and steps (differences of means over seeds):", "", *variants, ""]
    return [
        "## Block ablation (short distillations)",
        "",
        f"`python benchmarks/ablation.py --resolution R --width W --seed S` — runs of {', '.join(sorted({r['machine']['date'] for r in runs}))}, "
        f"{r0['machine']['cpu_cores']} CPU cores, device cpu, torch {r0['machine']['torch']}, "
        f"{' or '.join(str(t) for t in sorted({r['machine']['threads'] for r in runs}))} threads per run (each JSON records its own); cartoon teacher,",
        "lr 2e-3 and loss weights feature 1, alignment 0 (the defaults since 0.5), batch 4, crop 128, flips; α = 3; PSNR vs the teacher (dB) on the shortcut",
        f"frames of held-out bikes (136×320) and carphone (144×176) frames; repeating the keyframe gives {repeat} dB. Block GMACs at 136×320.",
        "Layouts other than `half` and `full` are experiments in `benchmarks/block_variants.py` (its docstring states what each tests).",
        f"Blocks start as built (`distill(data_init=False)`, the start of 0.13 and earlier), except rows marked `{DI.strip()}` "
        "(`--data-init`: `distill`'s data-dependent start, its default since 0.14, of the decoder tap's reduction alone since "
        "0.15; section \"Data-dependent start\"; rows of both versions: " + (", ".join(sorted({str(r.get("version")) for r in runs if r.get("data_init")})) or "none") + ").",
        ("CPU ms: the block alone / a whole shortcut frame at 136×320, medians, all layouts timed side by side in one run "
         f"(`python benchmarks/ablation.py --time-blocks` — {machine_line(speed['machine'])}; the teacher: {speed['rows'][0]['teacher_ms']:.1f} ms)."
         if speed else "CPU ms: not measured (`python benchmarks/ablation.py --time-blocks`)."),
        "",
        "| steps | resolution | width | block GMACs | CPU ms block / shortcut | seeds | bikes PSNR per seed | carphone PSNR per seed |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *gaps,
    ]


def _fixed_margin_context(summary: list[dict], margins: list[tuple[str, float | None]]) -> list[str]:
    """Why a fixed policy the adaptive curve does not beat is hard to beat: where its keyframes fell
    (its worst bikes frame against its neighbours') and what a perfect error signal under the same
    threshold rule gains there (keyframe_signals.py's oracle on the held-out stream)."""
    signals = load("keyframe_signals")
    out = []
    for label, m in margins:
        if m is None or m > 0:
            continue
        alpha = label[label.index("(") + 1 : label.index(")")]
        worst = {s["policy"]: s["bikes_worst"] for s in summary if s["kind"] == "fixed"}
        others = ", ".join(f"{k} {v:.2f}" for k, v in worst.items() if k != label)
        line = (f"- Where the curve falls short: {label}'s worst bikes shortcut frame is {worst[label]:.2f} dB against {others} dB "
                "for the other intervals; where its keyframes fall relative to the scene cut favours it on this stream.")
        if signals:
            oracle = [v["oracle"][alpha] for k, v in signals["results"].items() if k.endswith("held-out")]
            line += (f" Even the oracle signal (the shortcut frame's true error) under the same threshold rule lies only "
                     f"{sum(oracle) / len(oracle):+.2f} dB above it on the held-out stream (mean of {len(oracle)} seeds, "
                     "`keyframe_signals.py`): the rule, not the signal, limits the policy there.")
        out.append(line)
    return out


def _other_max_interval(main: dict) -> list[str]:
    """The same benchmark with another ``--max-interval`` (results/keyframes_m<M>.json), in one line."""
    out = []
    for path in sorted(RESULTS.glob("keyframes_m*.json")):
        r = json.loads(path.read_text())
        if r.get("max_interval") == main.get("max_interval"):
            continue
        out.append(f"- With `--max-interval {r['max_interval']}` (blocks distilled with gaps 1..{r['max_interval'] - 1}; "
                   f"`python benchmarks/keyframes.py --max-interval {r['max_interval']}`, {r['machine']['date']}): {r['verdict']}. "
                   "A policy that may not skip more than that many frames cannot go sparser than one keyframe in "
                   f"{r['max_interval']}, so its curve ends at `FixedInterval({r['max_interval']})`; the default keeps "
                   f"{main['max_interval']}.")
    return out


def layout_note(recorded: set[str]) -> str:
    """Which block layout a benchmark's blocks had: as its runs recorded it (since 0.11), else the half
    layout (the only default before 0.11)."""
    if not recorded:
        return ("Blocks: the half layout (the default before 0.11; runs before 0.11 did not record it, and a rerun "
                "builds the default block of `resolution=\"auto\"`).")
    return "Blocks: " + ", ".join(sorted(recorded)) + " layout (as recorded)."


def keyframes_section() -> list[str]:
    """Adaptive against fixed keyframes on streamed held-out video (keyframes.py), the signal study
    (keyframe_signals.py) and the default threshold (keyframes.py --choose-default)."""
    r = load("keyframes")
    if not r:
        return []
    summary = r["summary"]

    def row(label: str) -> dict:
        return next(s for s in summary if s["policy"] == label)

    fixed3, adapt3 = row("FixedInterval(3)"), row(f"adaptive, rate {1 / 3:.3f} on training frames")
    pts = sorted((s["gmacs"], s["psnr_all"]) for s in summary if s["kind"] == "adaptive")

    def margins_of(kind: str) -> list[tuple[str, float | None]]:
        out = []
        for s in (s for s in summary if s["kind"] == kind):
            m = None
            for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
                if x0 <= s["gmacs"] <= x1:
                    m = (y0 if x1 == x0 else y0 + (y1 - y0) * (s["gmacs"] - x0) / (x1 - x0)) - s["psnr_all"]
                    break
            out.append((s["policy"], m))
        return out

    margins, shifted = margins_of("fixed"), margins_of("fixed-mean")
    every = margins + margins_of("shifted")
    below = [f"{label} ({m:+.2f} dB)" for label, m in every if m is not None and m <= 0]
    above = all(m is not None and m > 0 for _, m in margins)
    above_shifted = bool(shifted) and all(m is not None and m > 0 for _, m in shifted)
    size = r["sizes"]
    out = [
        "## Keyframes: adaptive against fixed intervals (streamed held-out video)",
        "",
        f"`python benchmarks/keyframes.py` — {machine_line(r['machine'])}"
        + (f", shortcutify {r['version']}" if r.get("version") else "")
        + f"; took {r['seconds'] / 60:.0f} min (blocks distilled by an earlier",
        f"run with the same settings are reused from results/blocks/). Cartoon teacher ({size['bikes'][0]}×{size['bikes'][1]} bikes, "
        f"{size['carphone'][0]}×{size['carphone'][1]} carphone), one block per seed distilled {r['steps']} steps on the",
        f"bikes training frames with gaps 1..{r['max_interval'] - 1} (what `AdaptiveKeyframes(max_interval={r['max_interval']})` can "
        f"produce), serving every policy; seeds {', '.join(map(str, r['seeds']))}.",
        "The held-out stream is bikes frames 190–249 (a scene cut at about frame 242), then carphone (60 frames), fed frame by frame as",
        "one stream. All-frame PSNR = PSNR of the mean squared error over all frames against the teacher (keyframes count with zero",
        "error); GMACs/frame = mean over frames of the fvcore MACs of the path each frame took (decision included). Adaptive thresholds",
        "are calibrated with `calibrate(..., keyframe_rate=r)` on the **training** frames (one stream), never on held-out ones. Means over",
        "the seeds (± half their spread). " + layout_note({r["block"]["resolution"]} if "block" in r else set()),
        "",
        r["markdown"],
        "",
        f"- Calibrated to `FixedInterval(3)`'s keyframe rate on the training frames, the policy reaches a keyframe rate of "
        f"{adapt3['keyframe_rate']:.3f} on the held-out stream ({adapt3['gmacs']:.3f} vs {fixed3['gmacs']:.3f} GMACs/frame), all-frame PSNR "
        f"{adapt3['psnr_all']:.2f} vs {fixed3['psnr_all']:.2f} dB, and its worst bikes shortcut frame is **{adapt3['bikes_worst']:.2f} dB "
        f"against {fixed3['bikes_worst']:.2f} dB ({adapt3['bikes_worst'] - fixed3['bikes_worst']:+.2f} dB)** (target: at least +6 dB; the "
        "fixed policy ghosts the previous scene over the cut).",
        "- The adaptive curve (linear between its points) against each fixed policy at that policy's MACs: "
        + ", ".join(f"{label} {'outside the adaptive points' if m is None else f'{m:+.2f} dB'}" for label, m in margins)
        + f". Target (above the fixed curve across the range): {verdict(above)}.",
        *_fixed_margin_context(summary, margins),
        *(["- Each fixed interval averaged over its shifts (the same schedule started 0..α−1 frames later, "
           "`ShiftedInterval`: where a fixed policy's keyframes fall against the scene cut is luck): the adaptive curve lies "
           + ", ".join(f"{label.split(',')[0]} {'outside the adaptive points' if m is None else f'{m:+.2f} dB'}" for label, m in shifted)
           + f" above them. Above all of them: {verdict(above_shifted)}. Against each of the {len(every)} fixed schedules "
           f"(intervals × shifts) on its own, the curve lies above {sum(m is not None and m > 0 for _, m in every)}"
           + (f"; below: {', '.join(below)}." if below else ".")] if shifted else []),
        *_other_max_interval(r),
        "- A still stream (one frame repeated) gets keyframes only at `max_interval` (test "
        "`test_a_still_stream_gets_keyframes_only_at_the_maximum_interval`).",
        "",
        "![adaptive vs fixed keyframes](results/keyframes.png)",
        "",
    ]
    d = load("keyframes_default")
    if d:
        found = ", ".join(f"{v:.3f} ({k} teacher)" for k, v in d["thresholds"].items())
        out += [
            f"Default threshold (`python benchmarks/keyframes.py --choose-default`, {d['machine']['date']}): the thresholds that give "
            f"`FixedInterval(3)`'s rate on the bikes training frames are {found}; `AdaptiveKeyframes()` uses their geometric "
            f"middle, {d['middle']:.3f}, rounded. Calibrate for your teacher and footage.",
            "",
        ]
    sig = load("keyframe_signals")
    if sig:
        res = sig["results"]
        seeds = sig["seeds"]
        names = list(next(iter(res.values())))
        alphas = ("2", "3", "4", "5")
        rows = []
        for name in names:
            cells = [name]
            for split in ("training", "held-out"):
                for a in alphas:
                    vals = [res[f"{s}/{split}"][name][a] for s in seeds]
                    cells.append("n/a" if any(v is None for v in vals) else f"{sum(vals) / len(vals):+.2f}")
            cells.append(" / ".join(f"{sum(res[f'{s}/{split}'][name]['spearman'] for s in seeds) / len(seeds):.3f}"
                                    for split in ("training", "held-out")))
            rows.append("| " + " | ".join(cells) + " |")
        out += [
            "### Which signal decides (the study behind `FrameSignal.change`)",
            "",
            f"`python benchmarks/keyframe_signals.py` — {machine_line(sig['machine'])}; took {sig['seconds'] / 60:.0f} min; blocks distilled "
            f"as above but in the half layout (seeds {', '.join(map(str, seeds))}; two of the signals read that layout's reduced taps). For every frame and every keyframe it could have (1..5 frames back) the shortcut "
            "frame's squared error against the teacher and each candidate signal are measured once; the policy \"keyframe when the signal "
            "exceeds a threshold, always at 6 frames\" is then replayed exactly at every threshold. Each cell: how far the best threshold "
            "costing no more MACs than `FixedInterval(α)` lies above it in all-frame PSNR (dB; mean over seeds), on the training stream "
            "(bikes training frames: where the signal was chosen) and on the held-out stream (reported only). Signals: `enc_l1` the "
            "encoder tap's relative L1 distance to the keyframe's (0.4's first version), `enc_l2` the same in L2, `enc_p90`/`enc_p99` "
            "percentiles of its per-position distance, `pix_l1` the input frames' mean absolute difference, `enc_acc` the tap's "
            "frame-to-frame relative L1 steps summed since the keyframe, `enc_acc_k` the steps summed over the keyframe tap's norm "
            "(**what `AdaptiveKeyframes` uses**), `aligned_l1`/`reduced_l1` the block's reduced encoder tap against the reduced "
            "reference with/without the block's own flow, `oracle` the shortcut frame's true error as the signal (a perfect "
            "predictor of the error under the same rule; the rule itself is greedy, so it is a reference, not a bound).",
            "",
            "| signal | train α=2 | α=3 | α=4 | α=5 | held-out α=2 | α=3 | α=4 | α=5 | rank correlation with the error (train / held-out) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    return out


def overhead_section() -> list[str]:
    """The module's own Python time per call (benchmarks/overhead.py), and the run before the 0.26 changes beside it."""
    r = load("overhead")
    if not r:
        return []
    out = [
        "## Per-call overhead of the module (its own Python time)",
        "",
        f"`python benchmarks/overhead.py` — {machine_line(r['machine'])}, shortcutify {r.get('version', '?')}; a tiny "
        "generator (ResnetGenerator ngf=4, 1 block, 8x8 frames) whose programs are replaced, after one real call, by "
        "functions returning their cached outputs, so each `sv(x)` call's time is the module's logic (the input "
        "signature, the policy's decision, per-stream bookkeeping, the keyframe check); medians of "
        f"{r['calls']} calls, split by what each call ran; one thread, under `torch.inference_mode()` (with grad mode on, a "
        "call also enters `no_grad`). On a GPU a small frame's shortcut program is "
        "launch-bound, a few milliseconds: this is what the module adds to each frame.",
        "",
        r["markdown"],
        "",
    ]
    before = load("overhead_before-592f5e0")
    if before:
        out += [
            "Before 0.26's changes to the per-frame path (the signature of a call with frames alone without a pytree pass, "
            "the keyframe check in fewer ops, no tensor op to count keyframes, `no_grad` entered only "
            "where it changes something): the same script on the library at commit 592f5e0~1 "
            f"(`PYTHONPATH=<a worktree of it> python benchmarks/overhead.py --tag before-592f5e0`), {before['machine']['date']}, "
            "run alternately with the library at 592f5e0, whose run is the table above, twice each (the second runs shown):",
            "",
            before["markdown"],
            "",
        ]
    return out


def mixed_batches_section() -> list[str]:
    """Compiled programs under per-stream sub-batches: dynamic batch dimension or padding (mixed_batches.py),
    on the CPU and, where measured, on a GPU."""
    out: list[str] = []
    full = load("mixed_batches")
    runs = [(full or load("mixed_batches_quick"), "" if full else " --quick"), (load("mixed_batches_cuda"), None)]
    for r, flags in runs:
        if not r:
            continue
        if flags is None:  # the GPU run's settings, from what it recorded
            flags = f" --device cuda --threads {r['machine'].get('threads')} --size {r['size']} --ngf {r['ngf']} --frames {r['frames']}"
        res = r["results"]
        dyn, pad = res["dynamic"], res["pad to B"]
        faster = "padding" if pad["steady_median_s"] < dyn["steady_median_s"] else "the dynamic batch dimension"
        if not out:
            out += ["## Mixed batches and compiled programs", ""]
        where = r["machine"].get("gpu") or "CPU"
        out += [
            f"`python benchmarks/mixed_batches.py{flags}` — {where}; "
            f"{machine_line(r['machine'])}; the inference program of a ResNet generator (ngf {r['ngf']}, {r['size']}×{r['size']}), "
            f"{r['streams']} streams, {r['frames']} frames whose shortcut sub-batch sizes follow a random per-stream keyframe "
            f"schedule (rate 1/3): {r['sizes']}. `torch.compile(dynamic=None)` (torch's default) against padding every sub-batch to "
            f"{r['streams']} rows (one static graph) and eager. First-call seconds depend on the state of torch's on-disk compile cache (the padded mode runs after the dynamic one, whose compiled B-row graph it may find there).",
            "",
            r["markdown"],
            "",
            f"- Compiled graphs: dynamic {dyn['compiles']} for {len(set(n for n in r['sizes'] if n))} distinct sub-batch sizes "
            f"({sum(dyn['first_calls_s']):.1f} s in first calls), padded {pad['compiles']} ({sum(pad['first_calls_s']):.1f} s); "
            f"steady state {dyn['steady_median_s'] * 1e3:.2f} vs {pad['steady_median_s'] * 1e3:.2f} ms per call "
            f"({faster} faster here; one run, one order of modes, so not a precise ratio). Padding to B computes B rows on every call: "
            "its cost grows with the keyframe share of a batch, the dynamic graph's with the number of distinct sizes it meets.",
            f"- The export capture path re-captures for a sub-batch of 1: {r['export_recapture_s']:.2f} s the first time, "
            f"{r['export_cached_s'] * 1e3:.1f} ms afterwards (cached; sizes from 2 up share one symbolic-batch program since 0.23, "
            "`benchmarks/capture.py`).",
            "",
        ]
    return out


def taps_section() -> list[str]:
    """suggest_taps on the cartoon teacher, and its first choice distilled against the paper's taps (benchmarks/taps.py)."""
    r = load("taps")
    if not r:
        return []
    return [
        "## Automatic taps",
        "",
        f"`{taps_command(r)}` — {machine_line(r['machine'])}" + (f", shortcutify {r['version']}" if r.get("version") else "")
        + "; cartoon teacher, paper's taps "
        f"`{r['paper'][0]} -> {r['paper'][1]}`; took {r['total_seconds'] / 60:.1f} min. "
        + layout_note({x["resolution"] for x in r.get("runs", []) if "resolution" in x})
        + " Score = ln(teacher MACs / shortcut MACs) × (1 − difficulty)"
        + (" (since 0.12; the ranking before it used the saved fraction of the MACs)." if r.get("score") == "log-speedup" else
           " was not yet the score of this run (before 0.12: saved fraction × (1 − difficulty))."),
        "",
        r["markdown"],
        "",
    ] + _taps_verdict(r) + _taps_decoder_positions(r) + _taps_without_start(r, load("taps_no-data-init"))


def graph_scale_section() -> list[str]:
    """list_taps, suggest_taps and shortcutify on graphs of hundreds to thousands of nodes (benchmarks/graph_scale.py),
    with the same script's run on the commit before the one-pass MAC count where it was kept."""
    r, before = load("graph_scale"), load("graph_scale_before")
    if not r:
        return []
    out = [
        "## Graph size: listing, suggesting and wrapping large generators",
        "",
        f"`python benchmarks/graph_scale.py` — {machine_line(r['machine'])}, shortcutify {r['version']}; one call of each "
        "(suggest_taps builds and measures the cut of the candidate pairs it ranks), seconds:",
        "",
        r["markdown"],
        "",
    ]
    if before:
        old = {row[0]: row for row in before["rows"]}
        pairs = [(row, old[row[0]]) for row in r["rows"] if row[0] in old]
        out += [
            f"The same script on commit {before['commit']} (`PYTHONPATH=<a checkout of it> python benchmarks/graph_scale.py --tag old`, "
            f"{machine_line(before['machine'])}; its graph_scale_old.json kept as results/graph_scale_before.json), which summed the MACs over each node's ancestors, "
            "node by node, for the table of taps and again for each cut, and walked the graph by node objects for each candidate "
            "decoder tap: suggest_taps "
            + "; ".join(f"{new[0]} {o[5]:.1f} → {new[5]:.1f} s" for new, o in pairs)
            + "; list_taps " + "; ".join(f"{new[0]} {o[4]:.1f} → {new[4]:.1f} s" for new, o in pairs) + ". Two runs, one after the other, "
            "on a machine whose times vary by some tens of percent between runs.",
            "",
        ]
    return out


def _taps_decoder_positions(r: dict) -> list[str]:
    """Pairs that share the paper's encoder tap and differ in the decoder tap (``--extra``): mean PSNR per video."""
    runs = [x for x in r.get("runs", []) if x["enc"] == r["paper"][0]]
    decs = list(dict.fromkeys(x["dec"] for x in runs))
    if len(decs) < 2:
        return []
    videos = list(runs[0]["psnr"])
    cells = []
    for dec in decs:
        rs = [x for x in runs if x["dec"] == dec]
        cells.append(f"`{dec}` " + ", ".join(f"{v} {sum(x['psnr'][v] for x in rs) / len(rs):.2f}" for v in videos) + f" dB ({len(rs)} seeds)")
    return [
        f"Decoder tap positions after the paper's encoder tap `{r['paper'][0]}` (a conv, its norm, its activation: "
        "variants of one cut, which suggest_taps lists once, since 0.25 with the decoder tap on the conv): "
        + "; ".join(cells) + ".",
        "",
    ]


def _taps_without_start(r: dict, bare: dict | None) -> list[str]:
    """The same pairs distilled from their reductions as built (taps.py --no-data-init), per pair and video."""
    if not bare or not bare.get("runs") or not r.get("runs"):
        return []

    def means(x: dict) -> dict[tuple[str, str, str], float]:  # (per pair of taps, not per label: a ranking may change)
        groups: dict[tuple[str, str, str], list[float]] = {}
        for run in x["runs"]:
            for v, p in run["psnr"].items():
                groups.setdefault((run["enc"], run["dec"], v), []).append(p)
        return {k: sum(g) / len(g) for k, g in groups.items()}

    started, built = means(r), means(bare)
    cells = [f"{enc} -> {dec} {v} {started[(enc, dec, v)]:.2f} vs {built[(enc, dec, v)]:.2f} dB ({started[(enc, dec, v)] - built[(enc, dec, v)]:+.2f})"
             for enc, dec, v in started if (enc, dec, v) in built]
    if not cells:
        return []
    return [
        f"The same pairs distilled from their reductions as built (`{taps_command(bare, '--no-data-init')}`, "
        f"{bare['machine']['date']}, shortcutify {bare.get('version', '?')}, {bare['seeds']} seeds, otherwise the same), mean "
        "PSNR with `distill`'s data-dependent start against without it: " + "; ".join(cells) + ".",
        "",
    ]


def _taps_verdict(r: dict) -> list[str]:
    """Target: the first choice is the paper's taps, or distils to equal or better held-out PSNR at no more MACs."""
    runs = r.get("runs")
    if not runs:
        return ["(Ranking only: the full mode, which distils the first choice against the paper's taps, was not run.)", ""]
    labels = list(dict.fromkeys(x["label"] for x in runs))
    if len(labels) == 1:
        return [f"Target: the first choice is the paper's taps: {verdict(True)}.", ""]
    first = [x for x in runs if x["label"] == "first choice"]
    paper = [x for x in runs if x["label"] == "paper's taps"]
    videos = list(first[0]["psnr"])

    def mean(rs: list[dict], v: str) -> float:
        return sum(x["psnr"][v] for x in rs) / len(rs)

    fewer = first[0]["shortcut_macs"] <= paper[0]["shortcut_macs"]
    better = all(mean(first, v) >= mean(paper, v) for v in videos)
    diffs = ", ".join(f"{v} {mean(first, v) - mean(paper, v):+.2f} dB" for v in videos)
    return [
        f"Target: the first choice (real frames) distils to equal or better held-out PSNR than the paper's taps at no more "
        f"MACs: shortcut MACs {first[0]['shortcut_macs'] / paper[0]['shortcut_macs']:.3f}× the paper's "
        f"({first[0]['shortcut_macs'] / 1e6:,.1f} vs {paper[0]['shortcut_macs'] / 1e6:,.1f} MMACs), mean PSNR over the "
        f"{len(first)} seeds {diffs}: {verdict(fewer and better)}.",
        "",
    ]


def mean_gain(rs: list[dict], video: str) -> float:
    """Mean over distill_teachers runs ``rs`` of the gain over repeating the keyframe on ``video`` (dB)."""
    return sum(x["videos"][video]["psnr"] - x["videos"][video]["psnr_repeat"] for x in rs) / len(rs)


def variant_gaps(runs: list[dict], variant: str) -> list[str]:
    """Per teacher and step count: the variant's mean gain (``"defaults"``: the runs shown as the defaults) minus
    that of the half-resolution block at its automatic width distilled with the same settings and the same start
    (same teacher weights), per video."""
    sys.path.insert(0, str(HERE))
    from distill_teachers import BUILD_KEYS, default_blocks, label, run_block, start_of

    blocks = default_blocks()

    def is_mine(x: dict) -> bool:
        return label(x, blocks) == "defaults" if variant == "defaults" else x["variant"] == variant

    def distilled(x: dict) -> tuple:  # how the block was distilled, apart from the block it was given
        settings = {k: v for k, v in {"data_init": False, **x["settings"]}.items() if k not in BUILD_KEYS}
        return json.dumps(settings, sort_keys=True), start_of(x)

    def plain_half(x: dict, like: dict) -> bool:
        return (not is_mine(x) and run_block(x)[0] == "half" and not any(k in x["settings"] for k in ("width_scale", "motion_prior"))
                and distilled(x) == distilled(like))

    latest = {x["teacher"]: x.get("weights") for x in runs}
    lines = []
    for teacher, weights, steps in sorted({(x["teacher"], x.get("weights"), x["steps"]) for x in runs if is_mine(x) and x["steps"]}):
        same = [x for x in runs if x["teacher"] == teacher and x.get("weights") == weights and x["steps"] == steps]
        mine = [x for x in same if is_mine(x)]
        base = [x for x in same if plain_half(x, mine[0])]
        if mine and base:
            diffs = ", ".join(f"{v} {mean_gain(mine, v) - mean_gain(base, v):+.2f} dB" for v in mine[0]["videos"])
            name = teacher if weights == latest.get(teacher) else f"{teacher}@{weights or 'earlier'} (earlier weights)"
            lines.append(f"- {name}, {steps} steps ({len(mine)} and {len(base)} seeds): {diffs}.")
    what = "The defaults of 0.11 (`resolution=\"auto\"`'s block)" if variant == "defaults" else f"`{variant}`"
    return [f"{what} against the half layout at its automatic width distilled alike (the same distillation settings and "
            "start; difference of mean gains):", "", *lines, ""] if lines else []


def gaps_to_defaults(runs: list[dict], variant: str) -> list[str]:
    """Per teacher and step count: the variant's mean gain minus that of the runs shown as ``defaults`` with the
    same block (layout, width), the same distillation settings apart from the variant's build settings, and the
    same start (same teacher weights), per video; then both sides' mean over seeds of the worse video's gain."""
    sys.path.insert(0, str(HERE))
    from distill_teachers import BUILD_KEYS, default_blocks, label, run_block, start_of

    blocks = default_blocks()

    def distilled(x: dict) -> tuple:
        settings = {k: v for k, v in {"data_init": False, **x["settings"]}.items() if k not in BUILD_KEYS}
        return json.dumps(settings, sort_keys=True), start_of(x), run_block(x)

    lines = []
    mine_all = [x for x in runs if x["variant"] == variant and x["steps"]]
    for teacher, weights, steps in sorted({(x["teacher"], x.get("weights"), x["steps"]) for x in mine_all}):
        mine = [x for x in mine_all if (x["teacher"], x.get("weights"), x["steps"]) == (teacher, weights, steps)]
        base = [x for x in runs if (x["teacher"], x.get("weights"), x["steps"]) == (teacher, weights, steps)
                and label(x, blocks) == "defaults" and distilled(x) == distilled(mine[0])]
        mine = [x for x in mine if distilled(x) == distilled(mine[0])]
        if base:
            diffs = ", ".join(f"{v} {mean_gain(mine, v) - mean_gain(base, v):+.2f} dB" for v in mine[0]["videos"])
            lines.append(f"- {teacher}, {steps} steps ({len(mine)} and {len(base)} seeds): {diffs}; worse video: "
                         f"`{variant}` {mean_worse(mine):+.2f}, defaults {mean_worse(base):+.2f}.")
    return [f"`{variant}` against the runs shown as `defaults` with the same block, distilled alike (the same settings "
            "and start; difference of mean gains over repeat, then the mean over seeds of the worse video's gain):", "",
            *lines, ""] if lines else []


def mean_worse(runs: list[dict]) -> float:
    """Mean over runs of the worse video's gain over repeat (dB)."""
    return sum(min(v["psnr"] - v["psnr_repeat"] for v in x["videos"].values()) for x in runs) / len(runs)


def _teacher_speed_table() -> list[str]:
    """CPU ms per shortcut frame of every teacher with each timed variant's block (distill_teachers.py --time-blocks)."""
    sp = load("distill_teachers_speed")
    if not sp:
        return []
    variants = list(next(iter(sp["teachers"].values()))["variants"])
    rows = []
    for name, t in sp["teachers"].items():
        cells = [name, f"{t['size'][0]}×{t['size'][1]}", f"{t['teacher_ms']:.2f}"]
        for v in variants:
            x = t["variants"][v]
            cells.append(f"{x['shortcut_ms']:.2f} ({x['resolution']}, w{x['width']}, {x['block_macs'] / 1e6:.1f} MMACs)")
        rows.append(cells)
    return [
        f"CPU time per frame (`python benchmarks/distill_teachers.py --time-blocks --variant {' '.join(variants)}` — "
        f"{machine_line(sp['machine'])}; one held-out bikes frame at the teacher's size, medians of {sp['repeats']} interleaved "
        "rounds, every path of one teacher side by side; shortcut frame in ms, with the block's layout, width and MACs). "
        "These teachers are small: per-op overhead, not MACs, sets much of their time on CPU.",
        "",
        table(["teacher", "frame", "teacher ms", *[f"shortcut ms: {v}" for v in variants]], rows),
        "",
    ]


def _versions_line(rows: list[dict]) -> str:
    """``0.13.0 (0, 250, 1,000 steps), unrecorded (500, 2,000 steps)``: the library versions runs record, by step count."""
    by: dict[str, set[int]] = {}
    for r in rows:
        by.setdefault(r.get("version") or "before 0.13 (unrecorded)", set()).add(r["steps"])
    return ", ".join(f"{v} ({', '.join(f'{n:,}' for n in sorted(steps))} steps)" for v, steps in sorted(by.items(), key=lambda kv: (kv[0].startswith("before"), kv[0])))


def start_gaps(runs: list[dict]) -> list[str]:
    """Per teacher and step count: the defaults' mean gain minus that of ``no-data-init`` (the block as built) and
    of ``start-encoder+decoder`` (0.14's start), per video."""
    sys.path.insert(0, str(HERE))
    from distill_teachers import label

    groups: dict[tuple[str, int, str], list[dict]] = {}
    for x in runs:
        groups.setdefault((x["teacher"], x["steps"], label(x)), []).append(x)

    out = []
    for base_name, what in (("no-data-init", "the block as built (`no-data-init`)"),
                            ("start-encoder+decoder", "0.14's start of both reductions (`start-encoder+decoder`)")):
        lines = []
        for (teacher, steps, name), mine in sorted(groups.items()):
            base = groups.get((teacher, steps, base_name))
            if name != "defaults" or not steps or not base:
                continue
            diffs = ", ".join(f"{v} {mean_gain(mine, v) - mean_gain(base, v):+.2f} dB" for v in mine[0]["videos"])
            lines.append(f"- {teacher}, {steps:,} steps ({len(mine)} and {len(base)} seeds): {diffs}.")
        if lines:
            out += [f"The data-dependent start of the defaults (the decoder tap's reduction, since 0.15) against {what}, "
                    "same teacher weights, difference of mean gains:", "", *lines, ""]
    return out


def _why_low(runs: list[dict], low: list[str], steps: int, latest: dict) -> str:
    """Beside a missed target: the same teachers and steps with the block as built (``no-data-init``), worse video."""
    sys.path.insert(0, str(HERE))
    from distill_teachers import label

    parts = []
    for t in low:
        rs = [x for x in runs if x["teacher"] == t and x["steps"] == steps and x.get("weights") == latest[t] and label(x) == "no-data-init"]
        if rs:
            worse = [min(v["psnr"] - v["psnr_repeat"] for v in x["videos"].values()) for x in rs]
            parts.append(f"{t} {sum(worse) / len(worse):+.2f} ({len(rs)} seeds)")
    as_built = (f" With the block as built (`no-data-init`, the start of 0.13) the same runs gave {', '.join(parts)}: "
                "there the data-dependent start costs (its effect per teacher and step count is listed above the targets; "
                "section \"Data-dependent start\" compares starts).") if parts else ""
    return f"Missed on {', '.join(low)}.{as_built}"


def distill_teachers_section() -> list[str]:
    """Distillation over many teachers (benchmarks/distill_teachers.py): gains over repeat per teacher, variant and steps."""
    sys.path.insert(0, str(HERE))
    from distill_teachers import VARIANTS, default_blocks, label, latest_per_label, load_runs, summarise

    runs = latest_per_label(load_runs())
    files = [json.loads(p.read_text()) for p in [RESULTS / "distill_teachers.json", *sorted(RESULTS.glob("distill_teachers.part-*.json"))] if p.is_file()]
    if not files or not runs:
        return []
    m = files[-1]["machine"]
    dates = ", ".join(sorted({f["machine"]["date"] for f in files}))
    latest = {x["teacher"]: x.get("weights") for x in runs}  # a teacher retrained under its name: its last runs' weights
    current = [x for x in runs if x.get("weights") == latest[x["teacher"]]]
    earlier = [x for x in runs if x.get("weights") != latest[x["teacher"]]]
    out = [
        "## Distillation over many teachers",
        "",
        f"`python benchmarks/distill_teachers.py` (variants and step counts as listed) — runs of {dates}, "
        f"{m['cpu_cores']} CPU cores, device {m['device']}, torch {m['torch']}; "
        f"crop {files[-1]['crop']}, keyframe interval {files[-1]['interval']}; held-out bikes 190-249 and carphone; every step count a "
        "separate run; gain = PSNR of shortcut frames vs the teacher minus that of repeating the keyframe, mean over seeds "
        "(min..max); CPU s = process CPU seconds of the distillation (each run records its threads: most ran as two "
        "single-threaded shards side by side, `--part`). Variants listed but absent from the table were not run.",
        "",
        "Variants: " + "; ".join(f"`{k}` {v or '(the library defaults)'}" for k, v in VARIANTS.items()) + ".",
        "",
        "Every teacher at its current weights (the teachers trained at run time are trained reproducibly since "
        "2026-11-27; the runs on their earlier weights follow in a second table):",
        "",
        summarise(current),
        "",
        "`paper` is `distill`'s setting before 0.5; `motion-prior` is the defaults with the motion prior of 0.5 to 0.9 "
        "(`shortcutify(..., motion_prior=\"regional\")`, then `motion_prior=True`), `motion-prior-local` with the current "
        "one (`motion_prior=\"local\"`, what `True` builds since 0.10; section \"Motion prior\"); their CPU seconds include the "
        "prior's correlation in every training step. "
        "`full-half-width` is the defaults with the paper's layout at half its automatic width (`shortcutify(..., "
        "resolution=\"full\", width=auto // 2)`), about the half layout's CPU time (its CPU seconds here; \"Block ablation\"); "
        "`full-half-width-min8` the same but no narrower than 8 (it differs from `full-half-width` only where half the "
        "automatic width is below 8: the U-Nets' taps, and vid2vid's, where it is the automatic width). "
        "Since 0.11 the defaults build `resolution=\"auto\"`'s block (section \"Block resolution\"): on the three ResNet "
        "teachers that is the full layout at half the half layout's width (at least 8), the block `full-half-width-min8` "
        "distilled there, so its runs (which recorded their block) are shown as `defaults` (the cartoon teacher's "
        "`full-half-width` runs predate block records and keep their name; `defaults` runs were made for it); runs of "
        "0.10's defaults (the half layout at its automatic width) show as `half`, or under the variant they were run as "
        "when that variant's settings were the defaults (the cartoon teacher's `lr2e-3-feature1`). A run counts as `defaults` when its distillation settings are the defaults and its block (layout, width) is "
        "the one the defaults build for that teacher, as `--time-blocks` recorded it (`distill_teachers.is_default`); such a "
        "run's initial block weights are another draw from the same initialisation (building the variant's block takes one more "
        "block construction first), not the same numbers a run of `defaults` would start from. Of runs that count as the "
        "same (teacher, weights, shown name, seed, step count) only the last is shown: a rerun replaces the earlier run. "
        "Since 0.14 `distill` starts the block from the data (`data_init`, section \"Data-dependent start\"): 0.14 set both "
        "reductions, 0.15 the decoder tap's alone; runs of 0.14's defaults show as `start-encoder+decoder`, runs that "
        "recorded the defaults of 0.11 to 0.13 (the block as built) as `no-data-init`, as do runs of that variant. "
        "Library versions of the `defaults` runs shown: " + _versions_line([x for x in current if label(x) == "defaults"]) + ".",
        "",
    ]
    if earlier:
        out += [
            "Runs on earlier weights of the same teachers (teachers trained at run time before their training was "
            "seeded, each checkout training other ones; a teacher shown as name@weights had several: vid2vid-tiny was "
            "retrained on its own previous outputs). Variants are compared only within the same weights:",
            "",
            summarise(earlier),
            "",
        ]
    out += start_gaps(current)
    for variant in ("defaults", "full-half-width", "full-half-width-min8"):
        out += variant_gaps(runs, variant)
    out += _teacher_speed_table()
    blocks = default_blocks()
    mine = [x for x in runs if label(x, blocks) == "defaults" and x.get("weights") == latest[x["teacher"]]]
    if mine:
        def gains(steps: int) -> dict[str, list[float]]:
            per: dict[str, list[float]] = {}
            for x in mine:
                if x["steps"] == steps:
                    per.setdefault(x["teacher"], []).append(min(v["psnr"] - v["psnr_repeat"] for v in x["videos"].values()))
            return per

        for steps, need, what in ((1000, 1.5, "≥ 1.5 dB within 1000 steps"), (250, 0.5, "≥ 0.5 dB within 250 steps"),
                                  (0, 0.0, "untrained block at least as good as repeat")):
            per = gains(steps)
            g = {t: sum(x) / len(x) for t, x in per.items()}
            if g:
                low = sorted(t for t, v in g.items() if round(v, 2) < need)  # compared as shown (0.01 dB)
                shown = ", ".join(f"{t} {v:+.2f} ({len(per[t])} seeds{', ' + f'{min(per[t]):+.2f}..{max(per[t]):+.2f}' if len(per[t]) > 1 else ''})"
                                  for t, v in sorted(g.items()))
                out.append(f"- Target (runs with the library's default settings, every teacher at its current weights, worse "
                           f"of the two videos, mean over seeds): {what} — {shown}: "
                           f"{verdict(not low)}{' (not: ' + ', '.join(low) + ')' if low else ''}.")
                if low:
                    out.append("  " + _why_low(runs, low, steps, latest))
        out.append("")
    return out


def data_init_section() -> list[str]:
    """Starts of the block compared at one step count (benchmarks/data_init.py): gain over repeat per teacher and start."""
    sys.path.insert(0, str(HERE))
    from data_init import STARTS, load_runs

    runs = load_runs()
    if not runs:
        return []
    files = [json.loads(p.read_text()) for p in [RESULTS / "data_init.json", *sorted(RESULTS.glob("data_init.part-*.json"))] if p.is_file()]
    steps = sorted({r["steps"] for r in runs})
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["teacher"], r["start"], r["steps"]), []).append(r)
    order = list(STARTS)

    def gains(rs: list[dict], video: str) -> list[float]:
        return [x["videos"][video]["psnr"] - x["videos"][video]["psnr_repeat"] for x in rs]

    def cell(xs: list[float]) -> str:
        return f"{sum(xs) / len(xs):+.2f} ({min(xs):+.2f}..{max(xs):+.2f})"

    rows = []
    for (teacher, start, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], order.index(kv[0][1]) if kv[0][1] in order else 99)):
        block = rs[0].get("block", {})
        rows.append([teacher, f"{block.get('resolution', '?')}, w{block.get('width', '?')}", start, f"{n:,}", str(len(rs)),
                     cell(gains(rs, "bikes")), cell(gains(rs, "carphone"))])
    teachers = sorted({r["teacher"] for r in runs})

    def worse(start: str, n: int) -> float | None:  # mean over teachers of the worse video's mean gain
        per = []
        for t in teachers:
            rs = groups.get((t, start, n))
            if not rs:
                return None
            per.append(min(sum(gains(rs, v)) / len(rs) for v in ("bikes", "carphone")))
        return sum(per) / len(per)

    lines = []
    for n in steps:
        scores = {st: w for st in order if (w := worse(st, n)) is not None}
        lines.append(f"- {n:,} steps, mean over the {len(teachers)} teachers of the worse video's mean gain: "
                     + ", ".join(f"`{st}` {w:+.2f}" for st, w in sorted(scores.items(), key=lambda kv: -kv[1])) + ".")
    return [
        "## Data-dependent start",
        "",
        f"`python benchmarks/data_init.py` (two shards, `--part`) — {machine_line(files[-1]['machine'])}. Teachers, frames, "
        "crop 64, held-out videos and evaluation of \"Distillation over many teachers\"; each run distils a fresh block with "
        "the library's defaults after one start: `as-built` the reductions as built (random, `distill(data_init=False)`, "
        "0.13 and earlier); `shiftS` `ShortcutBlock.init_reductions(taps, shift=S, reductions=(\"encoder\", \"decoder\"))` on "
        "the teacher's taps of the frames `distill` samples for it (both reductions set to the taps' principal components at "
        "the scale of PyTorch's default initialisation on them, each raised by S standard deviations; `shift2` was `distill`'s "
        "default start in 0.14, run through `distill` itself then); `dec-shift2` / `enc-shift2` `shift2` on the decoder tap's "
        "reduction alone (`distill`'s default start since 0.15, run through `distill` itself) / on the encoder tap's alone; "
        "`random-shift2` random orthogonal directions at the same scale and shift; `unit-shift2` `shift2` with unit-norm rows. "
        "Gain in dB over repeating the keyframe, mean over seeds (min..max).",
        "",
        table(["teacher", "block", "start", "steps", "seeds", "bikes gain", "carphone gain"], rows),
        "",
        *lines,
        "",
    ]


def motion_prior_section() -> list[str]:
    """The untrained block with each motion estimator (benchmarks/motion_prior.py) and distillation from the prior."""
    r = load("motion_prior")
    if not r:
        return []
    sets = [(split, video) for split, videos in r["runs"][0]["sets"].items() for video in videos]
    rows = []
    for x in r["runs"]:
        cells = [x["teacher"], x["estimator"], f"{x['prior_macs'] / 1e6:.2f}"]
        cells += [f"{x['sets'][split][video]['gain']:+.2f}" for split, video in sets]
        rows.append(cells)
    out = [
        "## Motion prior",
        "",
        f"`python benchmarks/motion_prior.py` — {machine_line(r['machine'])}. The untrained block of every teacher of "
        "\"Distillation over many teachers\" (heads at zero: it predicts the reference feature warped by the prior), "
        "gain in dB over repeating the keyframe (PSNR of shortcut frames vs the teacher, interval 3) on the training "
        "frames (bikes' and bigbuckbunny's, 120 each: where the estimator was chosen) and on the held-out ones (bikes "
        "190-249, carphone: reported only). `none`: no prior (exactly repeat, except where the taps' feature is not "
        "the whole story: U-Net skips and vid2vid's image path carry the current frame). `local` and `regional`: "
        "`shortcutify.ops.MOTION_PRIORS` (`motion_prior=True` builds `local` since 0.10; `regional` was the prior of "
        "0.5 to 0.9); `local-reduced` (since 0.18): `local` on the block's own reduced encoder features (`h` channels on the flow grid, as built: random reductions) instead of the encoder tap; the others change one setting of `local`. Prior MMACs: the prior's MACs per shortcut frame (the "
        "correlation, counted by fvcore as the library of that run counted it: up to 0.16 the similarities as an `einsum`, "
        "C·(2r+1)² per coarse position; since 0.17 they run as one matrix product per row, counted as such, "
        "C·(2r+1)·(w+2r) per position, several times more MACs in a fraction of the time). " + layout_note({x["block"]["resolution"] for x in r["runs"] if "block" in x}),
        "",
        "Settings: " + "; ".join(f"`{k}` {v}" for k, v in r["estimators"].items() if v) + ".",
        "",
        table(["teacher", "estimator", "prior MMACs", *[f"{split} {video}" for split, video in sets]], rows),
        "",
    ]
    if "train" in r["runs"][0]["sets"]:
        def score(est: str) -> float:  # mean over teachers of the worse training video
            xs = [min(v["gain"] for v in x["sets"]["train"].values()) for x in r["runs"] if x["estimator"] == est]
            return sum(xs) / len(xs)

        ests = sorted({x["estimator"] for x in r["runs"]}, key=score, reverse=True)
        out += ["Mean over teachers of the worse training video's gain, by estimator: "
                + ", ".join(f"`{e}` {score(e):+.2f}" for e in ests) + ".", ""]
        none = {x["teacher"]: x["sets"] for x in r["runs"] if x["estimator"] == "none"}

        def over_none(x: dict, split: str, video: str) -> float:  # the prior's gain over the block without one
            return x["sets"][split][video]["gain"] - none[x["teacher"]][split][video]["gain"]

        held = [x for x in r["runs"] if x["estimator"] == "local"]
        moving = [over_none(x, "held-out", "bikes") for x in held]
        worst = [min(0.0, *(over_none(x, split, video) for split, video in sets)) for x in held]
        out += ["- Target (issue 12): the untrained block better than repeat on moving footage (held-out bikes, over the "
                "block without a prior) with `motion_prior=True`: " + ", ".join(f"{x['teacher']} {m:+.2f}" for x, m in zip(held, moving))
                + f": {verdict(all(m > 0 for m in moving))}; below the block without a prior on some video (training or "
                "held-out, shown to 0.01 dB): "
                + (", ".join(f"{x['teacher']} {w:+.2f}" for x, w in zip(held, worst) if round(w, 2) < 0) or "none") + ".",
                "- Without a prior (the default) the untrained block is exactly repeat on the ResNets: that target is met only "
                "with the prior. Distilled from the prior as 0.16 does it, blocks are about as good as without it (below: "
                "every target of \"Distillation over many teachers\" holds with the prior too); it stays off by default "
                "for the time it adds to every shortcut frame (the CPU table of \"Distillation over many teachers\"; on the "
                "speed benchmark's generator, the side-by-side `full, width 32, motion prior` row of \"Block resolution\": "
                + _prior_share_text() + "; on a GPU it has been measured only in an earlier form, section \"GPU\", and the "
                "default waits for a measurement of the present one).", ""]
    sys.path.insert(0, str(HERE))
    from distill_teachers import all_runs, default_blocks, label, latest_per_label, load_runs

    runs = latest_per_label(load_runs())
    out += gaps_to_defaults(runs, "motion-prior-local")
    eras = {  # how distillation from the prior changed, by what a run recorded
        "0.15 (pooled per call, every sample with the prior)": lambda x: x.get("version") == "0.15.0" and x.get("start") == "decoder",
        "0.16, pool fixed, every sample with the prior": lambda x: x.get("version") == "0.16.0" and "prior_left_out_every" not in x,
        "0.16, pool fixed, every 2nd sample without it (the library's)": lambda x: x.get("version") == "0.16.0" and x.get("prior_left_out_every") == 2,
    }
    prior_runs = [x for x in all_runs() if x["variant"] == "motion-prior-local" and x["steps"]]
    cells = sorted({(x["teacher"], x["steps"]) for x in prior_runs if any(f(x) for f in eras.values())})
    if cells:
        rows, blocks = [], default_blocks()
        for t, n in cells:
            row = [t, f"{n:,}"]
            for f in eras.values():
                rs = [x for x in prior_runs if (x["teacher"], x["steps"]) == (t, n) and f(x)]
                row.append(f"{mean_worse(rs):+.2f} ({len(rs)})" if rs else "-")
            defaults = [x for x in runs if (x["teacher"], x["steps"]) == (t, n) and label(x, blocks) == "defaults"]
            row.append(f"{mean_worse(defaults):+.2f} ({len(defaults)})" if defaults else "-")
            rows.append("| " + " | ".join(row) + " |")
        out += ["Distillation from the prior as it changed (`motion-prior-local`, all runs with the data-dependent start of "
                "the decoder tap's reduction; worse video's gain over repeat, mean over seeds, seeds in brackets; last "
                "column: the runs shown as `defaults`, without a prior). Since 0.16 a block's prior pools its coarse grid as "
                "on the frame it was built on (`motion_pool`), also on training crops (0.15 pooled each call by its own "
                "size: crops less than whole frames on the teachers with large enough frames, sharpen and the U-Nets; on the "
                "others both pool by 1, so the first two columns are one experiment there and only the first was run), and "
                "in training every second sample of a batch goes without the prior (`PRIOR_LEFT_OUT_EVERY`).", "",
                "| teacher | steps | " + " | ".join(eras) + " | defaults |",
                "|---|---|" + "---|" * (len(eras) + 1), *rows, ""]
    return out + reduced_prior_lines()


def reduced_prior_lines() -> list[str]:
    """The prior on the reduced encoder features against the tap's and none, distilled side by side
    (``distill_teachers.py --base reduced_prior``)."""
    sys.path.insert(0, str(HERE))
    from distill_teachers import latest_per_label, load_runs, summarise

    runs = latest_per_label(load_runs("reduced_prior"))
    files = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("reduced_prior.part-*.json"))]
    if not runs or not files:
        return []
    versions = ", ".join(sorted({x.get("version", "?") for x in runs}))
    out = [
        f"The prior on the block's reduced encoder features (`local-reduced`, shortcutify {versions}) against the tap's "
        "(`local`) and none (`defaults`), distilled side by side: `python benchmarks/distill_teachers.py --base reduced_prior "
        "--variant defaults motion-prior-local motion-prior-reduced --steps 0 250 1000 --seeds S --threads 1 --part P` "
        f"(two shards, seeds 0 and 1) — {machine_line(files[-1]['machine'])}. Kept out of the tables above: on this "
        "machine four of the teachers trained at run time came out with other weights (the same seeded training on "
        "another CPU), so every variant was run here on the same teachers. Gains over repeat as in the tables above:",
        "",
        summarise(runs),
        "",
    ]
    for variant in ("motion-prior-local", "motion-prior-reduced"):
        out += gaps_to_defaults(runs, variant)
    return out


def gpu_run_line(r: dict) -> str:
    """``GPU, torch, triton, date; TF32 flags; wall time.`` of one gpu.py run."""
    m = r["machine"]
    return (f"{m.get('gpu', '?')}, torch {m['torch']}, triton {m.get('triton')}, {m['date']}; TF32 matmul {r['tf32']['matmul']}, "
            f"cuDNN {r['tf32']['cudnn']}; {r.get('wall_s', 0):.0f} s.")


def run_table(r: dict) -> list[str]:
    """A gpu.py run's table of paths, then its device checks (``name value; ...``)."""
    from gpu import render  # noqa: E402  (beside this script)

    checks = "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in r["checks"].items())
    return [render(r, show_tiles=False), "", f"Checks on the device: {checks}.", ""]


def gpu_targets(r: dict, default: str = "half") -> list[str]:
    """Issue 10's targets, evaluated on one gpu.py run's rows of the default layout."""
    rows = {(x["config"], x["resolution"]): x for x in r["rows"]}
    targets = []
    compiled = [x for (c, res), x in rows.items() if x["compiled"] and res == default]
    if compiled:
        worst = min(x["ratio_to_teacher"]["shortcut"] for x in compiled)
        worst3 = min(x["ratio_to_teacher"]["stream3"] for x in compiled)
        targets.append(f"compiled shortcut ≥ 2.2× the teacher in each compiled config ({len(compiled)} of 4 measured): worst {worst:.2f}× {verdict(worst >= 2.2 and len(compiled) == 4)}")
        targets.append(f"compiled, amortised at α=3 ≥ 1.5×: worst {worst3:.2f}× {verdict(worst3 >= 1.5 and len(compiled) == 4)}")
    eager = [x for (c, res), x in rows.items() if not x["compiled"] and res == default]
    if eager:
        worst = min(x["ratio_to_teacher"]["shortcut"] for x in eager)
        big = [x["ratio_to_teacher"]["shortcut"] for x in eager if x["size"][0] * x["size"][1] > 10**6 and x["precision"] == "fp32"]
        targets.append(f"eager never slower than the teacher: worst {worst:.2f}× {verdict(worst >= 1.0)}")
        if big:
            targets.append(f"eager ≥ 1.5× at 1024×2048: {big[0]:.2f}× {verdict(big[0] >= 1.5)}")
    pairs = [(x, rows.get((x["config"].replace("bf16", "fp32"), x["resolution"]))) for x in r["rows"] if x["precision"] == "bf16"]
    slower = [f"{x['config']} ({x['resolution']})" for x, f in pairs if f and f["size"] == x["size"] and f["batch"] == x["batch"] and x["ms"]["shortcut"] > f["ms"]["shortcut"]]
    psnrs = [v for k, v in r["checks"].items() if k.startswith("bf16_autocast_psnr")]
    if psnrs:
        targets.append(f"bf16 shortcut frames vs fp32 ≥ 40 dB: worst {min(psnrs):.1f} dB {verdict(min(psnrs) >= 40)}")
    if slower:
        targets.append("bf16 slower than fp32 in: " + ", ".join(slower))
    return targets


def floor_ratios_line(tags: tuple[str, ...]) -> str:
    """``config (run) 1.95×, ...``: teacher / floor of the compiled rows of the default layouts of those gpu.py runs."""
    parts = []
    for tag in tags:
        r = load(tag)
        for x in (r or {}).get("rows", []):
            if x["compiled"] and x["resolution"] in ("half", "full-w2") and x.get("taps", "paper") == "paper":
                parts.append(x["ms"]["teacher"] / x["ms"]["floor"])
                parts[-1] = (f"{x['config']} ({x['resolution']}, {tag.removeprefix('gpu_')}) {parts[-1]:.2f}×", parts[-1])
    below = sum(v < 2.2 for _, v in parts)
    return (", ".join(t for t, _ in parts) + f" ({below} of {len(parts)} below 2.2×)") if parts else "not measured"


def gpu_section() -> list[str]:
    """benchmarks/gpu.py: eager/compiled, fp32/bf16, both layouts, with its checks and issue 10's targets."""
    r = load("gpu")
    out = ["## GPU (teacher, keyframe, shortcut, block, floor; eager and compiled)", ""]
    if not r or r.get("quick") or not r.get("rows"):
        return out + [
            "`python benchmarks/gpu.py` (one run of about 6 minutes on a GPU): **not measured yet** — no GPU was lent to the",
            "sessions that built the fast path (Triton kernel), `sv.compile` and the low-precision fixes. Issue 10's targets",
            "(compiled shortcut frame ≥ 2.2× the teacher and ≥ 1.5× amortised at α = 3 in the four compiled configs; eager never",
            "slower than the teacher and ≥ 1.5× at 1024×2048; bf16 never slower than fp32 and ≥ 40 dB against it) stand unmeasured;",
            "nothing here is claimed. Without a GPU, `python benchmarks/gpu.py --quick` runs the script's code on the CPU and",
            "compiles the Triton kernel for sm_90 (H100/H200).",
            "",
        ]
    out += [
        "ResNet generator (ngf=64, 6 blocks, the paper's taps), random non-zero block. ms: medians of CUDA-event timings, all",
        "paths of a config interleaved; × = teacher time / path time; α=3 × = a keyframe-interval-3 stream, measured;",
        "floor = head + tail alone (the shortcut program with a block that costs nothing); 'reference block' = the shortcut",
        "frame with the Triton kernels off (`use_fast_path(False)`, eager configs). Runs differ by machine (same kind): compare",
        "within a run. Newest first.",
        "",
        "Next GPU run (prepared, not yet run): the motion prior's cost in its 0.17 form (one matrix product per row; measured",
        "on a GPU only in gpu_run6's earlier `unfold` + `einsum` form), beside the default layout, which decides whether the",
        "prior can be on by default (issue 12):",
        "",
        "`python benchmarks/gpu.py --tag gpu_run9 --configs fp32-256-b1-eager,fp32-256-b1-compiled,fp32-1024x2048-b1-eager "
        "--resolutions full-w2,full-w2-mp --taps paper --no-tiles --budget-s 240`",
        "",
        "At the paper's taps the compiled floor (teacher / floor, what a block that cost nothing would reach) is "
        + floor_ratios_line(("gpu_run4", "gpu_run6")) + ", so in those below it no block can reach issue 10's 2.2×. Since",
        "0.25 the pair `suggest_taps` ranks first on the trained teacher (section \"Automatic taps\": `model.6 -> model.16`)",
        "keeps the paper's decoder tap, so its floor is the paper's pair's but for the head's norm and ReLU before its encoder",
        "tap; `--taps paper,suggested` measures both side by side (0.24's first choice, whose decoder tap at the frame's",
        "resolution let the floor skip the last up-sampling stage, distilled 2.3 dB worse on the CPU).",
        "",
    ]
    out += gpu_layouts_section() + gpu_current_section() + gpu_kernels_section()
    out += [
        "### First run: every config, both layouts, the kernel's first tiling sweep",
        "",
        f"`python benchmarks/gpu.py` — {gpu_run_line(r)} In this run and the second "
        "the compiled floor is the tail alone (its head was removed as dead code; corrected in the fifth run), and the block's "
        "warps ran in plain PyTorch.",
        "",
        *run_table(r),
    ]
    rows = {(x["config"], x["resolution"]): x for x in r["rows"]}
    targets = gpu_targets(r)
    out += ["Targets (issue 10, the half layout, the default then; first run):", ""] + [f"- {t}." for t in targets] + [""]
    layouts = [(c, x, rows.get((c, "full"))) for (c, res), x in rows.items() if res == "half" and (c, "full") in rows]
    if layouts:
        full_faster = [c for c, h, f in layouts if f["ms"]["shortcut"] < h["ms"]["shortcut"]]
        out += [
            "Layouts at the paper's width on the GPU (shortcut frame, full / half ms): "
            + ", ".join(f"{c} {f['ms']['shortcut']:.2f} / {h['ms']['shortcut']:.2f}" for c, h, f in layouts)
            + (f". `full` faster in: {', '.join(full_faster)}." if full_faster else ". At the paper's width `half` is faster in every "
               "config, as on the CPU (at half its width the full layout is what `resolution=\"auto\"` builds on these taps: sixth and "
               "seventh runs)."),
            "",
        ]
    return out + tiles_section(r) + gpu_followup_section() + kernel_resources_section()


def profile_lines(r: dict, keys: tuple[str, ...] = ("block", "shortcut", "floor")) -> list[str]:
    """One line per profiled call: kernels per call, GPU ms, the four largest kernels."""
    out = []
    for x in r["rows"]:
        prof = x.get("profile") or {}
        for key in keys:
            p = prof.get(key)
            if not p:
                continue
            top = "; ".join(f"{kernel_name(name)} {ms:.2f}" for name, _, ms in p["top"][:4])
            out.append(f"- {x['config']} ({x['resolution']}) {key}: {p['kernels_per_call']:.0f} kernels, {p['gpu_ms_per_call']:.2f} ms of GPU time; "
                       f"largest (ms): {top}.")
    return out


def floor_change(r: dict, before: str = "gpu_run3") -> str:
    """How much longer the compiled floors of run ``r`` are than those of the run ``before`` (same configs)."""
    old = load(before)
    if not old:
        return ""
    floors = {x["config"]: x["ms"]["floor"] for x in old["rows"] if x["compiled"] and x["resolution"] == "half"}
    ratios = [x["ms"]["floor"] / floors[x["config"]] for x in r["rows"] if x["compiled"] and x["config"] in floors]
    return f" (compiled floors {min(ratios):.2f}–{max(ratios):.2f}× those of the fourth run)" if ratios else ""


def gpu_layouts_section() -> list[str]:
    """The sixth and seventh GPU runs (gpu.py --tag gpu_run6, gpu_run7): the half layout against the full one at half
    width (what ``resolution="auto"`` builds on these taps) in every config, and the half layout with the motion prior."""
    runs = [(tag, load(tag)) for tag in GPU_LAYOUT_RUNS]
    runs = [(tag, r) for tag, r in runs if r and r.get("rows")]
    if not runs:
        return []
    out = [
        "### The default layout: half against full at half width; the motion prior",
        "",
        "Sixth to eighth GPU runs, the same kernels as the fifth: every config with the half layout and with the full layout at "
        "half its automatic width (`full-w2`: width 32 here, what `resolution=\"auto\"` builds on these taps since 0.11); in the "
        "sixth the eager configs also with the motion prior (`half-mp`: `motion_prior=True`, the correlation in its batched "
        "form), in the eighth the full layout's weights also channels-last (`full-w2-cl`: its convs then run in NHWC). The "
        "layouts of a config are timed one after the other in the same run; the same config differs between runs by up to "
        "a tenth (launch and clock state), so compare within a run.",
        "",
    ]
    for tag, r in runs:
        configs = ",".join(dict.fromkeys(x["config"] for x in r["rows"]))
        layouts = ",".join(dict.fromkeys(x["resolution"] for x in r["rows"] if not x["compiled"]))
        compiled = ",".join(dict.fromkeys(x["resolution"] for x in r["rows"] if x["compiled"]))
        flags = f"--resolutions {layouts or compiled}" + (f" --compiled-resolutions {compiled}" if compiled and layouts and compiled != layouts else "")
        out += [f"`python benchmarks/gpu.py --tag {tag} --configs {configs} {flags} --no-tiles"
                + (" --profile" if any(x.get("profile") for x in r["rows"]) else "") + f"` — {gpu_run_line(r)}", "", *run_table(r)]
    ratios = gpu_layout_ratios()
    if ratios:
        out += ["Shortcut frame, full at half width over half (same run; config (run)): "
                + ", ".join(f"{c} {v:.2f}×" for c, v in ratios.items()) + ".", ""]
    cl = [(tag, x["config"], x["ms"]["shortcut"] / full["ms"]["shortcut"]) for tag, r in runs for x in r["rows"] if x["resolution"] == "full-w2-cl"
          for full in r["rows"] if full["config"] == x["config"] and full["resolution"] == "full-w2"]
    if cl:
        out += ["Channels-last weights for the full layout (`full-w2-cl` over `full-w2`, shortcut frame): "
                + ", ".join(f"{c} ({t.removeprefix('gpu_')}) {v:.2f}×" for t, c, v in cl)
                + (": slower, so the block keeps the default memory format on the GPU." if min(v for *_, v in cl) > 1 else "."), ""]
    r6 = runs[0][1]
    out += ["Targets (issue 10) with the default block of 0.11 (`full-w2`), sixth run:", "", *[f"- {t}." for t in gpu_targets(r6, "full-w2")], ""]
    rows = {(x["config"], x["resolution"]): x for x in r6["rows"]}
    prior = [(c, rows[(c, "half")], x) for (c, res), x in rows.items() if res == "half-mp" and (c, "half") in rows]
    if prior:
        out += ["Motion prior (`half-mp` against `half`, block / shortcut frame ms): " + "; ".join(
            f"{c} {m['ms']['block']:.2f} / {m['ms']['shortcut']:.2f} against {h['ms']['block']:.2f} / {h['ms']['shortcut']:.2f}"
            for c, h, m in prior) + ". The prior's correlation runs as `unfold` + `einsum` off the CPU; it is opt-in.", ""]
    return out


def gpu_current_section() -> list[str]:
    """The newest GPU run (gpu.py --tag gpu_run4): the defaults as they stand, the floor with its head."""
    r = load("gpu_run4")
    if not r or not r.get("rows"):
        return []
    configs = ",".join(dict.fromkeys(x["config"] for x in r["rows"]))
    floors = [(x["config"], x["ms"]["teacher"] / x["ms"]["floor"]) for x in r["rows"] if x["compiled"]]
    return [
        "### The fast path as it stands: warp kernel, float32 in one stage, the floor with its head",
        "",
        f"`python benchmarks/gpu.py --tag gpu_run4 --configs {configs} --resolutions half --no-tiles --profile --budget-s 240` — "
        f"{gpu_run_line(r)} The fifth GPU run, with the kernels of this release and the half layout (the default of 0.10): both warps "
        "of the block in one Triton kernel (the full-resolution one with the residual added in the same pass), AdaBD's float32 "
        "kernel in one pipeline stage with bfloat16-pair products (the kernels' sweeps below chose both), and a corrected floor: "
        "the runs before measured the compiled floor without its head (the pass-through block ignored the encoder tap, so "
        "`torch.compile` removed the head as dead code); the floor now keeps it" + floor_change(r) + ".",
        "",
        *run_table(r),
        "Targets (issue 10, the half layout, the default of this run's release):",
        "",
        *[f"- {t}." for t in gpu_targets(r)],
        "- the most a compiled shortcut frame can gain here (teacher / floor, a block that costs nothing): "
        + ", ".join(f"{c} {v:.2f}×" for c, v in floors)
        + ": the 2.2× target lies above the floor of every compiled config with these taps; the block's remaining cost "
        "(shortcut / floor) is what is left to take.",
        "",
        "CUDA kernels per call and the largest by GPU time (torch.profiler, 3 calls; configs without CUDA graphs):",
        "",
        *profile_lines(r),
        "",
    ]


def gpu_kernels_section() -> list[str]:
    """This session's kernel sweeps (gpu.py --tag gpu_eager, --tag gpu_run3): float32 products and stages, the warp kernel's tiles."""
    first, second = load("gpu_eager"), load("gpu_run3")
    if not first or not first.get("tiles", {}).get("rows"):
        return []
    from gpu import render  # noqa: E402

    out = [
        "### How the kernels were tuned: float32 pipeline stages and products, warp tiles, layouts",
        "",
        f"Third GPU run: `python benchmarks/gpu.py --tag gpu_eager --configs {','.join(dict.fromkeys(x['config'] for x in first['rows']))} "
        f"--resolutions half,half-cl,full --tile-budget-s 90 --profile` — {first['machine'].get('gpu', '?')}, torch {first['machine']['torch']}, "
        f"triton {first['machine'].get('triton')}, {first['machine']['date']}; {first.get('wall_s', 0):.0f} s. The AdaBD kernel alone at the "
        "block's shapes (random operands, offsets of a few pixels), float32 by products and pipeline stages, ms (CUDA events):",
        "",
    ]
    rows = [x for x in first["tiles"]["rows"] if "ms" in x]
    shapes = list(dict.fromkeys(x["shape"] for x in rows))
    head = ["shape", "bf16 (rule)", "fp32 tf32, 3 stages (the kernel before)", "fp32 tf32, 1 stage", "fp32 ieee, 1 stage", "fp32 bf16x3, 1 stage",
            "fastest fp32"]
    table_rows = []
    for shape in shapes:
        xs = [x for x in rows if x["shape"] == shape]

        def pick(dtype: str, mode: str | None, stages) -> float | str:
            hit = [x for x in xs if x["dtype"].endswith(dtype) and x.get("fp32_products") == mode and x.get("stages") == stages
                   and (stages is not None or x.get("default") or mode != "bf16x3")]
            return hit[0]["ms"] if hit else "-"

        fp32 = [x for x in xs if x["dtype"].endswith("float32")]
        best = min(fp32, key=lambda x: x["ms"])
        table_rows.append([shape, next((x["ms"] for x in xs if x["dtype"].endswith("bfloat16") and x.get("default")), "-"),
                           pick("float32", "tf32", 3), pick("float32", "tf32", None), pick("float32", "ieee", None),
                           pick("float32", "bf16x3", None), f"{best.get('fp32_products')} {tiling(best)}: {best['ms']:.3f}"])
    out += [table(head, table_rows), ""]
    out += [
        "Triton pipelines the kernel's 4-byte gathers through shared memory: with its default three stages the float32 kernel "
        "held up to 224 KiB per program (one program per multiprocessor, see the resources table) and ran 2.5–8× slower than in "
        "one stage (7–8× at 1024×2048); bfloat16 is not pipelined that way and is unaffected. Float32 now runs one stage with a 16-channel step. "
        "Products: TF32 is about a tenth faster than the bfloat16 pairs (`bf16x3`, three bfloat16 products per float32 one) "
        "and IEEE a third slower; the default when `cudnn.allow_tf32` is set stays `bf16x3`, whose error against float64 is "
        f"{first['checks'].get('kernel_fp32_bf16x3_vs_exact_max_abs', float('nan')):.2g} where TF32's is "
        f"{first['checks'].get('kernel_fp32_tf32_vs_exact_max_abs', float('nan')):.2g} (IEEE "
        f"{first['checks'].get('kernel_fp32_ieee_vs_exact_max_abs', float('nan')):.2g}): the kernel is a few percent of a frame.",
        "",
    ]
    if second and second.get("warp_tiles", {}).get("rows"):
        w = [x for x in second["warp_tiles"]["rows"] if "ms" in x]
        keys = list(dict.fromkeys((x["shape"], x["dtype"].replace("torch.", "")) for x in w))
        wrows = []
        for shape, dtype in keys:
            xs = [x for x in w if x["shape"] == shape and x["dtype"].endswith(dtype)]
            ref = next(x["ms"] for x in xs if x.get("tiles") is None)
            old = next((x["ms"] for x in xs if x.get("tiles") == [256, 32, 4]), "-")
            mid = next((x["ms"] for x in xs if x.get("tiles") == [512, 8, 4]), "-")
            best = min((x for x in xs if x.get("tiles")), key=lambda x: x["ms"])
            four = next((x["ms"] for x in xs if x.get("tiles") == [512, 4, 4]), "-")
            wrows.append([shape, dtype, ref, old, mid, four, f"{'×'.join(map(str, best['tiles']))}: {best['ms']:.3f}"])
        out += [
            f"Fourth GPU run: `python benchmarks/gpu.py --tag gpu_run3 --configs {','.join(dict.fromkeys(x['config'] for x in second['rows']))} "
            "--resolutions half,full --compiled-resolutions half --sweeps warp --tile-budget-s 60 --profile --budget-s 430` — "
            f"{second['machine']['date']}; {second.get('wall_s', 0):.0f} s. The warp kernel alone at the half block's two warps "
            "(the reduced reference at half the decoder tap's resolution; the decoder tap at full resolution plus the residual), "
            "smooth flow, ms, against `warp_reference` + add (eager). The first sweep (third run, random flow) had shown wide channel "
            "tiles slowest; its first default, 256×32×4, was up to 6× slower than the reference. The rule now takes 512 pixels × 4 "
            "channels (fewer for small maps).",
            "",
            table(["shape", "dtype", "reference ms", "256×32×4 (first default)", "512×8×4 (third run's pick)", "512×4×4 (rule)", "fastest"], wrows),
            "",
        ]
    lay = {(x["config"], x["resolution"]): x["ms"]["shortcut"] for x in first["rows"]}
    cl = [(c, lay[(c, "half")], v) for (c, res), v in lay.items() if res == "half-cl" and (c, "half") in lay]
    if cl:
        out += [
            "Channels-last block weights (`half-cl`: every conv of the block in NHWC, to drop cuDNN's layout transforms) against "
            "the default NCHW, shortcut ms half / half-cl (third run, eager): " + ", ".join(f"{c} {h:.2f} / {v:.2f}" for c, h, v in cl)
            + ". Not faster anywhere: the block stays NCHW on CUDA.",
            "",
        ]
    if second:
        out += ["Every row of the fourth run (the warp kernel at 512×8×4; the compiled floor still without its head):", "",
                render(second, show_tiles=False), ""]
        both = {(x["config"], x["resolution"]): x["ms"]["shortcut"] for x in second["rows"]}
        pairs = [(c, h, both[(c, "full")]) for (c, res), h in both.items() if res == "half" and (c, "full") in both]
        if pairs:
            faster = [c for c, h, f in pairs if f < h]
            out += [
                "Layouts in that run, shortcut ms half / full: " + ", ".join(f"{c} {h:.2f} / {f:.2f}" for c, h, f in pairs)
                + (f"; `full` faster in {', '.join(faster)} (launch-bound 256×256, single frames)" if faster else "; `half` faster in all")
                + ". `half` stays the default on both devices (the compiled `full` rows of the first run were 0.4–0.8× the teacher).",
                "",
            ]
    return out


def kernel_resources_section() -> list[str]:
    """gpu.py --resources: the kernel compiled for sm_90a per tiling (no GPU needed)."""
    r = load("kernel_resources")
    if not r:
        return []
    rows = [[x["dtype"], tiling(x), x.get("registers", "-"), x.get("spill_bytes", "-"), x.get("shared_kib", "-"),
             x.get("programs_per_sm", x.get("error", "-"))] for x in r["rows"]]
    return [
        "### The kernel's resources on sm_90a, per tiling (static, no GPU)",
        "",
        f"`python benchmarks/gpu.py --resources` — Triton {r['machine'].get('triton', '?')} (the GPU runs had 3.6.0), compiled on {r['machine']['date']} for sm_90a and "
        "assembled with Triton's own `ptxas -v`: registers per thread, bytes spilled to local memory, shared memory, and programs "
        "that fit on one H100 multiprocessor by registers and shared memory; float32 in each of its product modes. Not a timing: "
        "it said where to look. Every 4-warp tiling with 32 channels per step takes all 255 registers and spills; float32's "
        "3-stage pipeline takes up to 224 KiB of shared memory (one program per multiprocessor) whatever its products, "
        "bfloat16 16 KiB at most. Measured since (third GPU run, above): float32 in one stage is 2.5–8× faster than in three, "
        "and is the default now.",
        "",
        table(["dtype", "tiles", "registers", "spill bytes", "shared KiB", "programs / SM"], rows),
        "",
    ]


def tiling(row: dict) -> str:
    """BLOCK_P×BLOCK_C×BLOCK_O×warps, and the pipeline's stages where set."""
    return "×".join(map(str, row["tiles"])) + (f", {row['stages']} stage{'s' * (row['stages'] > 1)}" if row.get("stages") else "")


def tiles_section(r: dict) -> list[str]:
    """The kernel's tiling sweep (gpu.py) and the rule that replaced the fixed default."""
    rows = r.get("tiles", {}).get("rows")
    if not rows:
        return []
    try:
        from shortcutify.ops.adabd_triton import default_tiles
    except ImportError:  # triton missing: the table without the rule's column
        default_tiles = None
    sms = 132 if "H100" in r["machine"].get("gpu", "") or "H200" in r["machine"].get("gpu", "") else None
    by_shape: dict[tuple[str, str], list[dict]] = {}
    for x in rows:
        if "ms" in x:
            by_shape.setdefault((x["shape"], x["dtype"].replace("torch.", "")), []).append(x)
    table_rows = []
    for (shape, dtype), xs in by_shape.items():
        base = next(x for x in xs if x.get("default"))
        best = min(xs, key=lambda x: x["ms"])
        wide = 4 if dtype == "float32" else 2
        rule = default_tiles(*(base["op"][:3]), base["op"][3] * base["op"][4], sms, wide) if default_tiles and sms else None
        ruled = next((x for x in xs if rule and list(rule) == x["tiles"] and not x.get("stages") and wide == 2), None)
        table_rows.append([shape, dtype, "×".join(map(str, base["tiles"])), base["ms"], tiling(best), best["ms"],
                           "×".join(map(str, rule)) if rule else "-", ruled["ms"] if ruled else "-"])
    failed = sorted({tiling(x) for x in rows if "error" in x})
    return [
        "The Triton kernel alone at the block's shapes (batch 1; random operands, offsets of a few pixels), by launch tiling "
        "BLOCK_P×BLOCK_C×BLOCK_O×warps, ms (one run, CUDA events). 'then' = the fixed tiling the kernel had in that run; "
        "'rule' = what `default_tiles` now picks (the largest pixel tile of 128/64/32 that still launches half as many programs "
        "as the GPU has multiprocessors), chosen from this table (float32 now takes a 16-channel step in one pipeline "
        "stage, chosen from the third run's sweep; not in this table).",
        "",
        table(["shape", "dtype", "then", "ms", "fastest", "ms", "rule", "ms"], table_rows),
        "",
    ] + ([f"Tilings that do not fit on the card (shared memory): {', '.join(failed)}.", ""] if failed else [])


def kernel_name(name: str) -> str:
    """A CUDA kernel's name without its template arguments and namespaces, for a table."""
    name = name.replace("(anonymous namespace)::", "").removeprefix("void ")
    return name.split("<")[0].split("(")[0].split("::")[-1][:60]


def gpu_followup_section() -> list[str]:
    """A second, shorter GPU run (gpu.py --tag gpu_tf32 --profile): after a change, with the CUDA kernels of block and shortcut."""
    r = load("gpu_tf32")
    if not r or not r.get("rows"):
        return []
    from gpu import render  # noqa: E402

    m = r["machine"]
    out = [
        "### Second run: TF32 in the kernel, pixel tiles by rule, and where the time goes",
        "",
        f"`python benchmarks/gpu.py --tag gpu_tf32 --configs {','.join(dict.fromkeys(x['config'] for x in r['rows']))} "
        f"--resolutions half --no-tiles --profile` — {m.get('gpu', '?')}, torch {m['torch']}, triton {m.get('triton')}, {m['date']} "
        "(another machine of the same kind; compare within a run). Changed since the first run: the kernel's float32 products "
        "follow `cudnn.allow_tf32` (on by default, as the teacher's convolutions) instead of `matmul.allow_tf32` (off by default), "
        "and its pixel tile follows the rule above.",
        "",
        render(r, show_tiles=False),
        "",
        "CUDA kernels per call and the largest by GPU time (torch.profiler, 3 calls; configs without CUDA graphs):",
        "",
    ]
    return out + profile_lines(r, keys=("block", "shortcut")) + [""]


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def main() -> None:
    out = ["# Benchmark results", "", "Each section: the command, the machine, the table, and the targets with the measured figures.", ""]
    cost = load("cost")
    if cost:
        r6 = next(r for r in cost["results"] if "6 blocks" in r["model"] and "ResNet" in r["model"])
        r9 = next(r for r in cost["results"] if "9 blocks" in r["model"])
        red6 = r6["teacher"]["macs"] / r6["shortcut"]["macs"]
        red9 = r9["teacher"]["macs"] / r9["shortcut"]["macs"]
        out += [
            "## Cost (MACs and parameters, fvcore, one multiply-add = one MAC)",
            "",
            f"`python benchmarks/cost.py` — {machine_line(cost['machine'])}; input {cost['size']}x{cost['size']}, batch 1.",
            "",
            cost["markdown"],
            "",
            "Floor = the shortcut path without the block (layers before the encoder tap and after the decoder tap, plus",
            "whatever the tail needs). Amortised = (keyframe + (α−1)·shortcut)/α.",
            "",
            f"- Target: ResNet 6 blocks shortcut path ≤ 1/6 of the teacher — measured 1/{red6:.2f}: {verdict(red6 >= 6)}.",
            f"- Target: ResNet 9 blocks ≤ 1/8 — measured 1/{red9:.2f}: {verdict(red9 >= 8)}.",
            "",
        ]
    speed = load("speed_cpu")
    if speed:
        s = speed["seconds"]
        ratio = s["teacher"] / s["shortcut"]
        amort = s["teacher"] / s["amortised"]
        share = speed["block_share"]
        mem = speed["memory_mib"]
        below = mem["shortcut"] < mem["teacher"]  # the tables round to MiB; "equal" below is judged on the rounding
        memory_verdict = "**met**" if below else (
            "**not met: equal**" if round(mem["shortcut"]) == round(mem["teacher"]) else "**missed**")
        out += [
            "## Speed and memory (CPU)",
            "",
            f"`{speed_command(speed)}` — {machine_line(speed['machine'])}; ResNet ngf=64, 6 blocks, {speed['size']}x{speed['size']}, "
            f"block {speed.get('resolution', 'half')} (the default layout for these taps), width {speed.get('block_width', '?')}, median of {speed['repeats']} interleaved rounds after warm-up, all paths in one process"
            + processes_note(speed),
            "",
            speed["markdown"],
            "",
            *process_ranges(speed),
            *keep_memory_lines(load("speed_cpu_keep-memory")),
            *suggested_taps_lines(load("speed_cpu_taps-suggested")),
            "keyframe = the teacher plus the reference preparation; shortcut = what `sv(frame)` runs on a",
            "non-keyframe (`sv.predict`); amortised = (keyframe + (α−1)·shortcut)/α at α = 3; block = the block alone.",
            "Peak tensor memory: the peak of live tensor memory while the path runs, above what was live before",
            ("(the CPU allocator's count of allocated bytes, recorded by the profiler with every allocation and free)."
             if speed.get("memory_method") else
             "(ops' self memory summed in the order the ops started, as speed.py counted it before 0.12: an op's frees of "
             "its own temporaries were counted at its start, so ops with large temporaries were undercounted)."),
            "",
            f"- Target: a shortcut frame ≥ 2.5× faster than the teacher — measured {ratio:.2f}×: {verdict(ratio >= 2.5)}.",
            f"- Target: the block ≤ 25% of a shortcut frame's time — measured {share:.1%}: {verdict(share <= 0.25)}.",
            f"- Target: amortised at α = 3 ≥ 1.6× — measured {amort:.2f}×: {verdict(amort >= 1.6)}.",
            f"- Target: peak memory of a shortcut frame below the teacher's — measured {mem['shortcut']:.0f} vs "
            f"{mem['teacher']:.0f} MiB: {memory_verdict}.",
            "",
        ]
        if "shortcut_reference" in s:
            runs = speed.get("processes", [])
            per_process = ", ".join(f"{r['seconds']['shortcut'] / r['seconds']['shortcut_reference']:.2f}×" for r in runs) \
                if len(runs) > 1 and all("shortcut_reference" in r["seconds"] for r in runs) else ""
            out += [
                f"With the ops' fast paths off (`use_fast_path(False)`: AdaBD by `grid_sample` and a matrix product, the warp by "
                f"`grid_sample`, timed in the same rounds) a shortcut frame takes {s['shortcut_reference'] * 1e3:.1f} ms "
                f"({s['teacher'] / s['shortcut_reference']:.2f}× the teacher): the shortcut frame with the CPU gather paths takes "
                f"{s['shortcut'] / s['shortcut_reference']:.2f}× that time ({'faster' if s['shortcut'] < s['shortcut_reference'] else 'not faster'} "
                "in this run" + (f"; per process {per_process}" if per_process else "") + "; the ops alone: section \"AdaBD on CPU\").",
                "",
            ]
        if "block_plain_layout" in s:
            runs = [r for r in speed.get("processes", []) if "block_plain_layout" in r["seconds"]]
            per_process = ", ".join(f"{r['seconds']['block'] / r['seconds']['block_plain_layout']:.2f}× / "
                                    f"{r['seconds']['shortcut'] / r['seconds']['shortcut_plain_layout']:.2f}×" for r in runs) if len(runs) > 1 else ""
            out += [
                f"With the block's inside in the plain layout (`channels_last_inside(False)`: as before 0.19, timed in the same rounds) "
                f"the block takes {s['block_plain_layout'] * 1e3:.1f} ms and a shortcut frame {s['shortcut_plain_layout'] * 1e3:.1f} ms: the "
                f"channels-last inside takes {s['block'] / s['block_plain_layout']:.2f}× and {s['shortcut'] / s['shortcut_plain_layout']:.2f}× "
                "that time" + (f" (block / shortcut frame per process: {per_process})" if per_process else "") + ".",
                "",
            ]
        if not below and round(mem["shortcut"]) == round(mem["teacher"]):
            out += [
                f"Memory: both peaks are set by the full-resolution layers the two paths share (the tail's 64×{speed['size']}² "
                "transposed-conv output and its norm, the head's first conv); the block's own working set "
                f"({mem['block']:.0f} MiB above its inputs) stays under that peak, so a shortcut frame needs no more memory "
                "than the teacher, but it cannot need less while it runs those layers unchanged.",
                "",
            ]
        elif not below:
            half = load("speed_cpu_half")
            out += [
                f"Memory: the block's own working set ({mem['block']:.0f} MiB above its inputs; the {speed.get('resolution', 'half')} "
                "layout works at the decoder tap's resolution) sets the shortcut frame's peak, above the teacher's (which the "
                "full-resolution layers both paths share set)"
                + (f"; with the half layout the block's working set is {half['memory_mib']['block']:.0f} MiB and the shortcut "
                   f"frame's peak {half['memory_mib']['shortcut']:.0f} MiB, the teacher's" if half else "") + ".",
                "",
            ]
        if speed.get("block_ops"):
            out += [
                "Where the block's time goes (profiler, self CPU time over 5 calls):",
                "",
                "| op | share | ms per call |",
                "|---|---|---|",
                *[f"| `{o['op']}` | {o['share']:.0%} | {o['ms_per_call']:.2f} |" for o in speed["block_ops"]],
                "",
            ]
        out += [
            "How the half layout was made fast on CPU (the MAC count alone does not do it: with AdaBD at the decoder",
            "tap's full resolution and the paper's width, the block takes "
            + (f"{load('speed_cpu_full')['block_share']:.0%}" if load("speed_cpu_full") else "about half")
            + " of a shortcut frame, see the section on block resolution): the",
            "block runs at half the decoder tap's resolution, entered by 2×2 stride-2 convs and left by a 2×2",
            "stride-2 transposed conv (space-to-depth, so no detail is discarded by the resampling itself);",
            "the warp reads channels-last memory as a table of channel rows, each output pixel one `embedding_bag` of its",
            "four bilinear corners (before 0.18: `grid_sample`, which gathers one channel at a time); AdaBD's deformable",
            "sampling and blend are one `embedding_bag` over channel rows where that pays (section \"AdaBD on CPU\"),",
            "elsewhere the current frame's columns are a strided view of the padded feature (no `im2col` copy)",
            "blended in place. The full layout (the default block here) runs its inside in channels-last memory (0.19: its",
            "convs and interpolation are faster there, AdaBD's product writes channel rows as `columns · Wᵀ`, and its",
            "reconstruction and residual are summed into contiguous memory a cached chunk at a time,",
            "`shortcutify.ops.pointwise`, so that the tail reads contiguous memory without a whole-map transpose); other layout changes",
            "go through 2-D transposes, which torch copies cache-blocked; the shortcut frame's program returns",
            "only the output, so nothing of the block is kept alive through the tail.",
            "",
            "GPU: no GPU was lent to the session that measured these; `python benchmarks/speed.py --device cuda` times",
            "with CUDA events and reports torch.cuda.max_memory_allocated when one is.",
            "",
        ]
    q = load("quality")
    if q:
        out += [
            "## Quality on held-out real video (vs the teacher's output)",
            "",
            f"`python benchmarks/quality.py` — {machine_line(q['machine'])}; teacher `{q['teacher']}` (trained here), "
            f"{q['steps']} distillation steps for the block ({q.get('resolution', 'half')} layout, width {q.get('block_width', 'automatic')}"
            + (f"; shortcutify {q['version']}, `distill`'s data-dependent start of the {q['start']} tap's reduction" if q.get("start")
               else "; distilled as built, before 0.14's data-dependent start")
            + f") and for the slim student; took {q['seconds'] / 60:.0f} min.",
            "",
            q["markdown"],
            "",
            "PSNR/SSIM: mean over the non-keyframes (the student: all frames). Temporal error: mean |Δ output − Δ teacher|",
            "over consecutive frames. GMACs/frame: amortised at α (repeat: keyframes only).",
            "",
            "![quality vs MACs](results/quality.png)",
            "",
        ]
        verdicts = []
        for video in sorted({r["video"] for r in q["results"]}):
            rows = [r for r in q["results"] if r["video"] == video]
            sc = next(r for r in rows if r["method"] == "Shortcut-V2V" and r["alpha"] == 3)
            rivals = [r for r in rows if r["method"] not in ("Shortcut-V2V", "teacher") and r["macs"] <= sc["macs"]]
            beaten = [r for r in rivals if sc["psnr"] > r["psnr"]]
            listed = ", ".join(f"{r['method']}{alpha_label(r['alpha'])}: {r['psnr']:.2f}" for r in rivals)
            verdicts.append(f"- {video}: Shortcut-V2V at α=3 {sc['psnr']:.2f} dB; beats {len(beaten)} of the {len(rivals)} baselines "
                            f"with equal or lower MACs ({listed}).")
        temporal = []
        for video in sorted({r["video"] for r in q["results"]}):
            rows = [r for r in q["results"] if r["video"] == video]
            for sc in (r for r in rows if r["method"] == "Shortcut-V2V"):
                rep = next(r for r in rows if r["method"].startswith("(i)") and r["alpha"] == sc["alpha"])
                word = "below" if sc["temporal"] < rep["temporal"] else "above"
                temporal.append(f"{video.split(' ')[0]} α={sc['alpha']}: {sc['temporal']:.4f} ({word} repeat's {rep['temporal']:.4f})")
        out += ["Target: at α = 3 the shortcut frames beat every baseline of equal or lower MACs, on two real videos:", ""] + verdicts + [""]
        out += ["Temporal error of the shortcut frames vs repeating the keyframe: " + "; ".join(temporal) + ".", ""]
    out += resolution_section(speed, load("speed_cpu_half"), load("speed_cpu_full"), q, load("quality_half"), load("quality_full"))
    out += cpu_gather_section()
    out += ablation_section()
    out += keyframes_section()
    out += overhead_section()
    out += mixed_batches_section()
    out += taps_section()
    out += graph_scale_section()
    out += distill_teachers_section()
    out += data_init_section()
    out += motion_prior_section()
    out += gpu_section()
    out += [
        "## Reproducing",
        "",
        "Each section states the command that made its table; `python benchmarks/report.py` then writes this file from "
        "`benchmarks/results/`. The headline figures: `python benchmarks/cost.py && python benchmarks/speed.py && "
        "python benchmarks/quality.py && python benchmarks/report.py` (cost.py and speed.py take under a minute each on "
        "2 cores; quality.py took " + (f"{q['seconds'] / 60:.0f} min" if q else "(not run)")
        + ": it distils the block and trains the slim student).",
        "Quick mode (what CI runs after the tests, results to a scratch directory, `SHORTCUTIFY_RESULTS`): "
        + "; ".join(f"`{c}`" for c in ci_benchmark_commands()) + ".",
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(out))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
