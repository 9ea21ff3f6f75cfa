"""Memory and time of every hwnas stage on random-weight models of real shapes (1.1B, 3B, 7B), next to the estimate.

Builds a bf16 safetensors folder per shape (random weights: this measures memory and time, not
accuracy) with the default model's tokenizer (vocab 49,152: the model's vocab is sized to match),
then runs each stage through the CLI in a subprocess, polling the process tree's RSS with psutil
every 0.1 s: `eval` (a few items), `export --quant int8` (the whole model, as a user's first try)
next to `optimum-cli export openvino --weight-format int8` on the same folder, `profile` (two
subnets), `extract`, `search` (two evaluations), `heal` (two steps), `serve` (one request). Each
row has the peak RSS, the wall time, the exit code, the estimate (`hwnas.model.memory`) and, for a
refused stage, hwnas's one-line refusal. Rows are appended as they finish (resumable). Run it
under the shared lock:

  flock /tmp/hwnas-heavy.lock .venv/bin/python bench/scale_bench.py --shapes 1.1b [--stages eval,export]

Writes bench/results/scale_bench.json and .md; the model folders and bundles go to --work (deleted
with --clean at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwnas.io import write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = REPO / "bench" / "results" / "scale_bench"
HWNAS = [str(REPO / ".venv" / "bin" / "hwnas")]
OPTIMUM = [str(REPO / ".venv" / "bin" / "optimum-cli")]
GB = 1024 ** 3
SHAPES = {  # layers, hidden, MLP, heads, KV heads (the vocab follows the tokenizer)
    "1.1b": dict(name="TinyLlama-1.1B shape", num_hidden_layers=22, hidden_size=2048, intermediate_size=5632,
                 num_attention_heads=32, num_key_value_heads=4),
    "3b": dict(name="Llama-3.2-3B shape", num_hidden_layers=28, hidden_size=3072, intermediate_size=8192,
               num_attention_heads=24, num_key_value_heads=8),
    "7b": dict(name="LLaMA2-7B shape", num_hidden_layers=32, hidden_size=4096, intermediate_size=11008,
               num_attention_heads=32, num_key_value_heads=32),
}
# optimum-cli first and hwnas export right after it (the baseline of the 1.25x goal, same run); serve
# uses the exported bundle; the stages that order the supernet (extract, heal, search) share its cache.
STAGES = ("optimum", "export", "eval", "serve", "extract", "heal", "profile", "search")
TARGET = """
name = "bench"
[openvino]
NUM_STREAMS = 1
[workload]
prompt_tokens = 16
new_tokens = 8
batch_sizes = [1]
[measure]
warmup = 1
repeats = 2
max_remeasure = 0
"""


def tokenizer_folder() -> Path:
    """The default model's converted folder (its correct tokenizer), made once by hwnas."""
    from hwnas.model.loading import gguf_cache_folder, resolve_model

    return gguf_cache_folder(resolve_model("default"))


def build_folder(shape: str, folder: Path) -> Path:
    """A random-weight bf16 LLaMA folder of `shape`, written tensor by tensor (never the whole model in memory)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_dir = tokenizer_folder()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    spec = {k: v for k, v in SHAPES[shape].items() if k != "name"}
    cfg = LlamaConfig(**spec, vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=False,
                      rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    cfg.dtype = "bfloat16"
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(cfg)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    shard, size, files, weight_map = {}, 0, [], {}

    def flush():
        nonlocal shard, size
        if shard:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, str(tmp / name), metadata={"format": "pt"})
            files.append(name)
            weight_map.update({k: name for k in shard})
            shard, size = {}, 0

    for name, p in skeleton.named_parameters():
        if name.endswith("norm.weight"):
            t = torch.ones(p.shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(p.shape, generator=g) * 0.02).to(torch.bfloat16)
        shard[name] = t
        size += t.numel() * 2
        if size > 2 * GB:
            flush()
    flush()
    total = sum((tmp / f).stat().st_size for f in files)
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    cfg.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.rename(tmp, folder)
    return folder


def run_measured(cmd: list[str], env: dict, timeout: float, *, serve_port: int | None = None) -> dict:
    """Run `cmd`, polling the RSS of its process tree; for `serve`, send one request once healthy, then stop it."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    served = None
    out_lines: list[str] = []
    import threading

    def reader():
        for line in proc.stdout:
            out_lines.append(line.rstrip())

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    anon_peak, at_peak = 0, (0, 0)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            anon, file = _rss_split([ps.pid] + [c.pid for c in ps.children(recursive=True)])
            anon_peak = max(anon_peak, anon)
            if rss > peak:
                peak, at_peak = rss, (anon, file)
        except psutil.Error:
            pass
        if time.perf_counter() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if serve_port and served is None:
            served = _try_request(serve_port)
            if served is not None:
                os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.1)
    rc = proc.wait()
    th.join(timeout=5)
    res = {"rc": rc, "peak_rss_gb": round(peak / GB, 3), "peak_anon_gb": round(anon_peak / GB, 3),
           "at_peak_anon_gb": round(at_peak[0] / GB, 3), "at_peak_file_gb": round(at_peak[1] / GB, 3),
           "wall_s": round(time.perf_counter() - t0, 1),
           "cmd": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
           "tail": [ln for ln in out_lines if ln.strip()][-3:]}
    if serve_port:
        res["served"] = served
    return res


def _available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _rss_split(pids: list[int]) -> tuple[int, int]:
    """(anonymous, file-backed + shared) resident bytes of `pids` from /proc/PID/status: the anonymous part
    has to fit in RAM, the file-backed part (memory-mapped weights, IR .bin) the kernel can drop and re-read."""
    anon = file = 0
    for pid in pids:
        try:
            fields = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
        except OSError:
            continue
        kb = lambda k: int(fields.get(k, "0 kB").split()[0]) * 1024  # noqa: E731
        anon += kb("RssAnon")
        file += kb("RssFile") + kb("RssShmem")
    return anon, file


def _try_request(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            if r.status != 200:
                return None
    except Exception:  # noqa: BLE001 - not up yet
        return None
    body = json.dumps({"prompt": "The capital of France is", "max_tokens": 8}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.loads(r.read())
    return {"request_s": round(time.perf_counter() - t, 2), "tokens": out.get("usage", {}).get("completion_tokens")}


def stage_command(stage: str, folder: Path, work: Path, cfg: dict) -> tuple[list[str], dict]:
    """(command, estimate options) of one stage."""
    n = cfg["num_hidden_layers"]
    sub_layers = n - 4
    target = work / "bench-target.toml"
    if stage == "eval":
        return HWNAS + ["eval", "--model", str(folder), "--tasks", "arc_easy", "--limit", "8"], {"batch_tokens": 512}
    if stage == "optimum":
        return OPTIMUM + ["export", "openvino", "--model", str(folder), "--task", "text-generation-with-past",
                          "--weight-format", "int8", str(work / "optimum-int8")], {}
    if stage == "export":
        return HWNAS + ["export", "--model", str(folder), "--quant", "int8", "--no-accuracy", "--no-generation-check",
                        "--no-measure", "--target", str(target), "--out", str(work / "bundle-int8"), "--force"], {"quant_bits": 8}
    if stage == "profile":
        return HWNAS + ["profile", "--model", str(folder), "--target", str(target), "--samples", "2",
                        "--out", str(work / "profile"), "--force"], {"samples": 2}
    if stage == "extract":
        return HWNAS + ["extract", "--model", str(folder), "--layers", str(sub_layers), "--out", str(work / "extract"),
                        "--force"], {"subnet_layers": sub_layers}
    if stage == "search":
        return HWNAS + ["search", "--model", str(folder), "--target", str(target), "--evaluations", "2", "--population", "2",
                        "--tasks", "arc_easy", "--limit", "4", "--report-limit", "4", "--out", str(work / "search")], {"samples": 2}
    if stage == "heal":
        return HWNAS + ["heal", "--model", str(folder), "--layers", str(sub_layers), "--steps", "2", "--batch-size", "1",
                        "--seq-len", "128", "--out", str(work / "heal"), "--force"], {"subnet_layers": sub_layers, "batch_tokens": 128}
    if stage == "serve":
        return HWNAS + ["serve", str(work / "bundle-int8"), "--port", "18731", "--no-verify"], {}
    raise ValueError(stage)


def estimate_for(stage: str, folder: Path, work: Path, opts: dict, cache: Path) -> dict | None:
    from hwnas.model.memory import check_bundle, estimate, model_config, weights_mapped

    os.environ["HWNAS_CACHE_DIR"] = str(cache)
    if stage == "optimum":
        return None
    if stage == "serve":
        return check_bundle(work / "bundle-int8").to_dict() if (work / "bundle-int8").is_dir() else None
    source, cfg, dtype = model_config(str(folder))
    opts = dict(opts)
    layers = opts.pop("subnet_layers", None)
    frac = 1.0 if layers is None else layers / cfg["num_hidden_layers"]
    ordered = any((cache / "supernets").glob(f"{source.name}-*/config.json"))
    return estimate(stage, cfg, dtype=dtype, model=source.name, subnet_fraction=frac, ordered_cached=ordered,
                    mapped_weights=weights_mapped(source, dtype), **opts).to_dict()


def estimate_offline(stage: str, shape: str, opts: dict, at_run: dict | None) -> dict | None:
    """The current formula's estimate for a row, from the shape alone (the folders may be gone)."""
    from hwnas.model.memory import estimate

    if stage == "optimum" or at_run is None:
        return None
    cfg = {k: v for k, v in SHAPES[shape].items() if k != "name"}
    cfg.update(model_type="llama", vocab_size=49152, tie_word_embeddings=False)
    opts = dict(opts)
    layers = opts.pop("subnet_layers", None)
    frac = 1.0 if layers is None else layers / cfg["num_hidden_layers"]
    if stage == "serve":
        terms = at_run["terms"]
        opts["ir_bytes"] = terms["compiled_weights"] if "compiled_weights" in terms else terms.get("compiled_ir", 0) / 1.2
    return estimate(stage, cfg, dtype=at_run["dtype"], model=at_run["model"], subnet_fraction=frac,
                    ordered_cached=stage in ("heal", "search"),  # extract ran first and cached the ordered supernet
                    mapped_weights=True, **opts).to_dict()  # the folders are bf16 safetensors


def estimate_table() -> None:
    """bench/results/scale_estimates.{json,md}: every stage's estimate for each shape (vocab 32,000 as
    the real models, a bf16 safetensors checkpoint: memory-mapped), per billion parameters, and whether it fits 24 / 32 / 64 GB machines (available
    memory taken as the total minus 2 GB for the OS and other processes)."""
    from hwnas.model.memory import GB, ModelShape, estimate

    stage_opts = {"eval": {}, "extract": {"subnet_fraction": 0.875}, "export": {}, "export int4": {"quant_bits": 4},
                  "profile": {"samples": 12}, "search": {"samples": 24, "subnet_fraction": 0.8},
                  "heal": {"subnet_fraction": 0.875, "batch_tokens": 1024}, "serve": {}, "train": {"batch_tokens": 1024}}
    rows = []
    for shape, spec in SHAPES.items():
        cfg = {k: v for k, v in spec.items() if k != "name"}
        cfg.update(model_type="llama", vocab_size=32000, tie_word_embeddings=False)
        p = ModelShape.from_config(cfg).params()
        for name, opts in stage_opts.items():
            e = estimate(name.split()[0], cfg, dtype="bfloat16", model=spec["name"], mapped_weights=True, **opts)
            rows.append({"shape": shape, "params_b": round(p / 1e9, 2), "stage": name, "options": opts,
                         "memory_gb": round(e.memory_gb, 1), "disk_gb": round(e.disk_gb, 1),
                         "memory_gb_per_b": round(e.memory_gb / (p / 1e9), 2),
                         "fits": {f"{m}GB": e.memory_bytes <= (m - 2) * GB for m in (24, 32, 64)}, "terms": e.terms})
    out = REPO / "bench" / "results" / "scale_estimates"
    write_json_atomic(out.with_suffix(".json"), {"rows": rows, "command": "python bench/scale_bench.py --estimates"})
    lines = ["# Stage estimates by shape (hwnas.model.memory, bf16 weights, vocab 32,000)", "",
             "Command: `.venv/bin/python bench/scale_bench.py --estimates`. Fits: estimate <= machine memory - 2 GB.", "",
             "| shape | params | stage | memory GB | GB per B params | disk GB | 24 GB | 32 GB | 64 GB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fits"]
        lines.append(f"| {r['shape']} | {r['params_b']}B | {r['stage']} | {r['memory_gb']} | {r['memory_gb_per_b']} | "
                     f"{r['disk_gb']} | {'yes' if f['24GB'] else 'no'} | {'yes' if f['32GB'] else 'no'} | "
                     f"{'yes' if f['64GB'] else 'no'} |")
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")


def load_results() -> dict:
    f = RESULTS.with_suffix(".json")  # noqa: F821 - RESULTS may be re-pointed by --results
    return json.loads(f.read_text()) if f.is_file() else {"rows": []}


def save_results(res: dict) -> None:
    res["load_avg"] = os.getloadavg()
    write_json_atomic(RESULTS.with_suffix(".json"), res)
    write_text_atomic(RESULTS.with_suffix(".md"), render(res))


def render(res: dict) -> str:
    lines = [f"# Scale bench ({RESULTS.name}): peak RSS and wall time per stage (random-weight bf16 folders)", "",
             "Command: `flock /tmp/hwnas-heavy.lock .venv/bin/python bench/scale_bench.py`; host shared with other "
             f"jobs (load average at the end {res.get('load_avg')}). Estimate: `hwnas.model.memory`.", "",
             "Anon / file: the anonymous and file-backed (memory-mapped) parts of the peak RSS, and the highest "
             "anonymous RSS of the run (rows measured before this split have none). Estimate: what must fit in RAM "
             "(what the resource check compares with available memory), + mapped: memory-mapped files the stage reads, "
             "in RSS while memory is free. est/measured: (estimate + mapped) / peak RSS; est/anon: estimate / peak anon.", "",
             "| shape | params | stage | rc | peak RSS GB | anon / file at peak GB | peak anon GB | estimate GB | "
             "+ mapped GB | est/measured | est/anon | wall s | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        est = r.get("estimate") or {}
        e = est.get("memory_gb")
        m = est.get("mapped_gb") or 0.0
        ok = e and r["peak_rss_gb"] > 0.05 and r["rc"] == 0
        ratio = f"{(e + m) / r['peak_rss_gb']:.2f}" if ok else ""
        anon_ratio = f"{e / r['peak_anon_gb']:.2f}" if ok and r.get("peak_anon_gb") else ""
        note = r.get("refusal") or ("" if r["rc"] == 0 else (r["tail"][-1][:100] if r["tail"] else ""))
        if r.get("served"):
            note = f"one request in {r['served']['request_s']} s"
        split = f"{r['at_peak_anon_gb']:.2f} / {r['at_peak_file_gb']:.2f}" if "at_peak_anon_gb" in r else ""
        anon = f"{r['peak_anon_gb']:.2f}" if "peak_anon_gb" in r else ""
        if r.get("resource_check") == "off":
            note = (note + " (resource check off)").strip()
        lines.append(f"| {r['shape']} | {r['params_b']:.2f}B | {r['stage']}{' #' + str(r['round'] + 1) if r.get('round') else ''} | {r['rc']} | {r['peak_rss_gb']:.2f} | "
                     f"{split} | {anon} | {'' if e is None else f'{e:.2f}'} | {f'{m:.2f}' if m else ''} | {ratio} | "
                     f"{anon_ratio} | {r['wall_s']} | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="1.1b,3b,7b")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--work", default="/tmp/hwnas-scale-bench")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per stage")
    ap.add_argument("--redo", action="store_true", help="re-run stages that already have a row")
    ap.add_argument("--clean", action="store_true", help="delete --work at the end")
    ap.add_argument("--results", default="scale_bench", help="results file name under bench/results/")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the stages, interleaved (rows get a round number)")
    ap.add_argument("--reestimate", action="store_true",
                    help="only recompute every row's estimate with the current hwnas.model.memory (measurements kept)")
    ap.add_argument("--estimates", action="store_true", help="only write bench/results/scale_estimates.{json,md}")
    args = ap.parse_args()
    if args.estimates:
        estimate_table()
        return
    global RESULTS
    RESULTS = REPO / "bench" / "results" / args.results
    work_root = Path(args.work)
    res = load_results()
    if args.reestimate:
        for r in res["rows"]:
            work = work_root / r["shape"]
            cmd, opts = stage_command(r["stage"], work / f"random-{r['shape']}", work, SHAPES[r["shape"]])
            r.setdefault("estimate_at_run", r.get("estimate"))
            r["estimate"] = estimate_offline(r["stage"], r["shape"], opts, r.get("estimate_at_run"))
        save_results(res)
        return
    for shape in args.shapes.split(","):
        work = work_root / shape
        work.mkdir(parents=True, exist_ok=True)
        (work / "bench-target.toml").write_text(TARGET)
        folder = build_folder(shape, work / f"random-{shape}")
        cfg = json.loads((folder / "config.json").read_text())
        cache = work / "cache"
        env = dict(os.environ, HWNAS_CACHE_DIR=str(cache), PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
        from hwnas.model.memory import ModelShape

        params = ModelShape.from_config(cfg).params()
        plan = [(rnd, st) for rnd in range(args.rounds) for st in sorted(args.stages.split(","), key=STAGES.index)]
        for rnd, stage in plan:
            done = [r for r in res["rows"] if r["shape"] == shape and r["stage"] == stage and r.get("round", 0) == rnd]
            if done and not args.redo:
                continue
            cmd, opts = stage_command(stage, folder, work, cfg)
            est = estimate_for(stage, folder, work, opts, cache)
            print(f"[{time.strftime('%H:%M:%S')}] {shape} {stage}: estimate {est and est['memory_gb']} GB", flush=True)
            available = _available()  # what the resource check compared the estimate with
            row = run_measured(cmd, env, args.timeout, serve_port=18731 if stage == "serve" else None)
            row.update(shape=shape, shape_name=SHAPES[shape]["name"], params_b=params / 1e9, stage=stage, estimate=est,
                       round=rnd, resource_check="off" if env.get("HWNAS_RESOURCE_CHECK", "").lower() in
                       ("off", "0", "no", "false") else "on", mem_available_gb=round(available / GB, 2))
            if row["rc"] == 2 and row["tail"] and row["tail"][-1].startswith("Error:"):
                row["refusal"] = row["tail"][-1]
            print(f"    rc {row['rc']} peak {row['peak_rss_gb']} GB wall {row['wall_s']} s  {row['tail'][-1:] }", flush=True)
            res["rows"] = [r for r in res["rows"]
                           if not (r["shape"] == shape and r["stage"] == stage and r.get("round", 0) == rnd)] + [row]
            save_results(res)
    if args.clean:
        shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    main()
