"""`hwnas serve` under load: requests/s and tokens/s at concurrency 1, 4, 16, with per-request TTFT and
TPOT as the client sees them (streaming, p50/p95), for each bundle given, in one run.

    PYTHONPATH=. python bench/serve_bench.py BUNDLE [BUNDLE ...] --out bench/results/serve_bench.json

Each bundle gets its own server process (its manifest's target properties, --max-active 16) on a free
127.0.0.1 port; one warm-up request, then for each concurrency C, `--rounds` x C requests of
`--max-tokens` tokens are sent by C client threads (streaming completions, varied prompts). TTFT: request
sent -> first text chunk; TPOT: (last chunk - first chunk) / (completion tokens - 1). Small numbers on
purpose: the host is a shared 2-core machine, so compare bundles within this run, not across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["The three primary colours are", "Once upon a time, in a small village,", "The best way to learn a language is",
           "Water boils at", "In 1969, astronauts", "A good breakfast includes", "The capital of Japan is",
           "To make bread you need", "The largest planet in the solar system is", "My favourite book is",
           "Photosynthesis is the process", "The internet was invented", "Cats and dogs are", "A computer program is",
           "The ocean is home to", "Exercise is important because"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: str, max_active: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "hwnas", "serve", bundle, "--port", str(port), "--max-active", str(max_active),
                          "--max-queue", str(max_active)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        if p.poll() is not None:
            raise SystemExit(f"server for {bundle} exited: {p.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return p, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    p.kill()
    raise SystemExit("server did not start")


def direct_baseline(bundle: str, max_tokens: int, repeats: int = 3) -> dict:
    """One request at a time straight through openvino_genai.LLMPipeline (no server), same properties: the
    baseline for the server's overhead. Runs in a child process so its memory and threads are gone after."""
    code = f"""
import json, statistics, sys
sys.path.insert(0, {str(ROOT)!r})
import openvino_genai as og
from hwnas.deploy.serving.server import prepare
from hwnas.deploy.speculative import pipeline_kwargs, apply_draft_tokens
prep = prepare({bundle!r}, verify=False)
props = {{k: ("YES" if v is True else "NO" if v is False else str(v)) for k, v in prep.properties.items()}}
pipe = og.LLMPipeline({bundle!r}, "CPU", **props, **pipeline_kwargs({bundle!r}, props))
cfg = og.GenerationConfig(); cfg.max_new_tokens = {max_tokens}; cfg.do_sample = False; cfg.apply_chat_template = False
apply_draft_tokens({bundle!r}, cfg)
ttft, tpot = [], []
for i in range({repeats} + 1):
    m = pipe.generate([{PROMPTS[0]!r}], cfg).perf_metrics
    if i:
        ttft.append(m.get_ttft().mean); tpot.append(m.get_tpot().mean)
print(json.dumps({{"ttft_ms": statistics.median(ttft), "tpot_ms": statistics.median(tpot)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first = last = None
    usage = None
    for c in client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
                                       stream_options={"include_usage": True}):
        if c.choices and c.choices[0].text:
            now = time.perf_counter()
            first = first or now
            last = now
        if c.usage:
            usage = c.usage
    n = usage.completion_tokens
    return {"ttft_ms": 1000 * (first - t0), "tpot_ms": 1000 * (last - first) / max(n - 1, 1), "tokens": n,
            "latency_s": time.perf_counter() - t0}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_level(client, model: str, conc: int, n_requests: int, max_tokens: int) -> dict:
    results, lock = [], threading.Lock()
    todo = list(range(n_requests))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            r = one_request(client, model, PROMPTS[i % len(PROMPTS)], max_tokens)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    toks = sum(r["tokens"] for r in results)
    ttft = [r["ttft_ms"] for r in results]
    tpot = [r["tpot_ms"] for r in results if r["tokens"] > 1]
    return {"concurrency": conc, "requests": len(results), "wall_s": wall, "requests_per_s": len(results) / wall,
            "tokens_per_s": toks / wall, "completion_tokens": toks,
            "ttft_ms_p50": statistics.median(ttft), "ttft_ms_p95": pct(ttft, 0.95),
            "tpot_ms_p50": statistics.median(tpot), "tpot_ms_p95": pct(tpot, 0.95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--labels", default=None, help="Comma list of row labels (default: folder names).")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=2, help="Requests per client thread at each concurrency.")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "bench/results/serve_bench.json"))
    a = ap.parse_args()
    import openai

    levels = [int(c) for c in a.concurrency.split(",")]
    labels = a.labels.split(",") if a.labels else [Path(b).name for b in a.bundles]
    rows = []
    direct = {}
    for label, bundle in zip(labels, a.bundles):
        direct[label] = direct_baseline(bundle, a.max_tokens)
        print(f"{label:>12} direct LLMPipeline, one request: TTFT {direct[label]['ttft_ms']:.0f} ms, "
              f"TPOT {direct[label]['tpot_ms']:.1f} ms", flush=True)
        proc, url = start(bundle, max(levels))
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
            model = client.models.list().data[0].id
            one_request(client, model, PROMPTS[0], 8)  # warm-up
            for c in levels:
                r = run_level(client, model, c, a.rounds * c, a.max_tokens)
                r["bundle"] = label
                rows.append(r)
                print(f"{label:>12} c={c:<3} {r['requests_per_s']:.2f} req/s {r['tokens_per_s']:.1f} tok/s "
                      f"TTFT p50/p95 {r['ttft_ms_p50']:.0f}/{r['ttft_ms_p95']:.0f} ms "
                      f"TPOT p50/p95 {r['tpot_ms_p50']:.1f}/{r['tpot_ms_p95']:.1f} ms", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    base = {r["concurrency"]: r for r in rows if r["bundle"] == labels[0]}
    for r in rows:
        r["tokens_per_s_vs_first"] = r["tokens_per_s"] / base[r["concurrency"]]["tokens_per_s"]
    for r in rows:
        r["tpot_p50_vs_direct"] = r["tpot_ms_p50"] / direct[r["bundle"]]["tpot_ms"]
    out = {"rows": rows, "direct_llmpipeline": direct, "bundles": dict(zip(labels, a.bundles)), "max_tokens": a.max_tokens, "rounds": a.rounds,
           "host": {"cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "the host may be shared (see the load average): compare within this run only"},
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    md = ["| bundle | concurrency | requests | req/s | tok/s | tok/s vs first bundle | TTFT p50 / p95 ms | TPOT p50 / p95 ms "
          "| TPOT p50 / direct LLMPipeline |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['bundle']} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
                  f"{r['tokens_per_s_vs_first']:.2f}x | {r['ttft_ms_p50']:.0f} / {r['ttft_ms_p95']:.0f} | "
                  f"{r['tpot_ms_p50']:.1f} / {r['tpot_ms_p95']:.1f} | {r['tpot_p50_vs_direct']:.2f}x |")
    md.append("")
    md += [f"direct LLMPipeline (no server, one request) {k}: TTFT {v['ttft_ms']:.0f} ms, TPOT {v['tpot_ms']:.1f} ms"
           for k, v in direct.items()]
    Path(a.out).with_suffix(".md").write_text("\n".join(md) + f"\n\n{out['host']['note']}; {a.max_tokens} tokens per request, "
                                               f"{a.rounds} requests per client thread, streaming completions, greedy.\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
