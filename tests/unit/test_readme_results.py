"""The figures README.md and docs/*.md quote agree with the committed results files (part of `make test`).

Two kinds of check, both reading every figure from its results file (nothing here hard-codes a result):
- a figure written as a link to a value, `[1.45](bench/results/deploy_bench.json#/rows/2/decode_speedup)`,
  must equal the value at that JSON pointer after the rounding the page shows (its decimals);
- each claim below recomputes a figure, in the page's own wording, from `bench/results/...` and checks
  that some page states it; a number edited on a page, or a results file regenerated without updating
  the pages, fails here.
Every results path a page names must exist.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PAGES = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
PAGES.update({f"docs/{p.name}": p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))})


def load(name: str):
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def flat(text: str) -> str:
    return " ".join(text.split())


FLAT = flat("\n\n".join(PAGES.values()))  # claims may sit on any page (README or the user guide)

# ---------------------------------------------------------------------------- figures linked to their value
FIGURE_LINK = re.compile(r"\[([^\]]+)\]\((?:\.\./)?(bench/results/[^)#\s]+\.json)#(/[^)\s]*)\)")
NUMBER = re.compile(r"^[+\-]?(\d+(?:,\d{3})*)(?:\.(\d+))?$")


def figure_links(text: str) -> list[tuple[str, str, str]]:
    """(shown text, results file, JSON pointer) of every figure linked to its value."""
    return FIGURE_LINK.findall(text)


def resolve_pointer(doc, pointer: str):
    """RFC 6901 JSON pointer into a loaded JSON document (KeyError/IndexError/TypeError when absent); in a
    link's fragment it is percent-encoded (a space is %20), as RFC 6901 section 6 says."""
    from urllib.parse import unquote

    for raw in pointer.split("/")[1:]:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def check_figure(shown: str, file: str, pointer: str, root: Path = ROOT) -> str | None:
    """None when `shown` is the value at `file#pointer` rounded to as many decimals as `shown` has; else why not."""
    path = root / file
    if not path.is_file():
        return f"{file} does not exist"
    try:
        value = resolve_pointer(json.loads(path.read_text(encoding="utf-8")), pointer)
    except (KeyError, IndexError, TypeError, ValueError):
        return f"{file}#{pointer}: no such value"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{file}#{pointer} is {value!r}, not a number"
    text = shown.strip().replace("\u2212", "-").replace("**", "")
    m = NUMBER.match(text)
    if not m:
        return f"link text {shown!r} is not a plain number (units go outside the link)"
    decimals = len(m.group(2) or "")
    number = float(text.replace(",", ""))
    if abs(number - value) > 0.5 * 10 ** -decimals + 1e-9:
        return f"{shown!r} is not {file}#{pointer} = {value!r} rounded to {decimals} decimals"
    return None


LINKED = [(page, *link) for page, text in PAGES.items() for link in figure_links(text)]


def test_readme_headline_figures_are_linked_to_their_values():
    assert sum(page == "README.md" for page, *_ in LINKED) >= 12, "README's headline figures should link to their values"


@pytest.mark.parametrize("page, shown, file, pointer", LINKED, ids=[f"{p}:{s}@{f}#{q}" for p, s, f, q in LINKED])
def test_linked_figure_equals_its_value(page, shown, file, pointer):
    problem = check_figure(shown, file, pointer)
    assert problem is None, f"{page}: {problem}"


def test_a_wrong_figure_is_caught(tmp_path):
    """The checks can fail: a mistyped, mis-rounded or dangling figure is reported, a right one passes."""
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "r.json").write_text(json.dumps({"rows": [{"x": 1.4477, "n": 2374, "s": "a/b"}]}))
    page = ("speed [1.45](bench/results/r.json#/rows/0/x)×, [1.4](../bench/results/r.json#/rows/0/x), "
            "[1.46](bench/results/r.json#/rows/0/x), [1.447](bench/results/r.json#/rows/0/x), [2,374](bench/results/r.json#/rows/0/n), "
            "[2375](bench/results/r.json#/rows/0/n), [1.45](bench/results/r.json#/rows/1/x), [1.45×](bench/results/r.json#/rows/0/x), "
            "[1.45](bench/results/gone.json#/rows/0/x), [1](bench/results/r.json#/rows/0/s)")
    verdicts = [check_figure(s, f, q, root=tmp_path) for s, f, q in figure_links(page)]
    assert [v is None for v in verdicts] == [True, True, False, False, True, False, False, False, False, False], verdicts
    assert "rounded to 2 decimals" in verdicts[2] and "no such value" in verdicts[6] and "not a plain number" in verdicts[7]
    assert "does not exist" in verdicts[8] and "not a number" in verdicts[9]
    # a recomputed claim is not found once a page misstates one digit of it
    for section, claim in CLAIMS[:: max(1, len(CLAIMS) // 12)]:
        digit = next(i for i, ch in enumerate(claim) if ch.isdigit())
        wrong = claim[:digit] + str((int(claim[digit]) + 1) % 10) + claim[digit + 1:]
        assert states(FLAT, claim, section) and not states(FLAT.replace(flat(claim), flat(wrong)), claim, section), claim


@pytest.mark.parametrize("page", list(PAGES))
def test_every_cited_results_file_exists(page):
    cited = set()
    for path, alts in re.findall(r"(bench/results/[\w./-]+)(?:\{([\w,]+)\})?", PAGES[page]):
        cited |= {path + a for a in alts.split(",")} if alts else {path}  # name.{json,md} cites both files
    if page in ("README.md", "docs/benchmarks.md"):
        assert cited, f"{page} cites no results file"
    missing = sorted(c.rstrip("./") for c in cited if not (ROOT / c.rstrip("./")).exists())
    assert not missing, f"{page}: {missing}"


def _profile_claims():
    cold, warm = load("profile_bench_cold.json"), load("profile_bench.json")
    loo, cold_loo, held = warm["loo_mape_pct"], cold["loo_mape_pct"], warm["holdout"]["same_session"]
    return [
        f"**{cold['profile_timings_s']['total']:.1f} s** / {warm['profile_timings_s']['total']:.1f} s",
        f"`bench/results/profile_bench_cold.json`: {cold_loo['ttft_ms_mape_pct']:.1f} / "
        f"{cold_loo['tpot_ms_mape_pct']:.1f} / {cold_loo['throughput_tok_s_mape_pct']:.1f} %",
        f"TTFT {loo['ttft_ms_mape_pct']:.1f} %, TPOT {loo['tpot_ms_mape_pct']:.1f} %, "
        f"throughput {loo['throughput_tok_s_mape_pct']:.1f} %",
        f"TTFT **{held['ttft_ms_mape_pct']:.1f} %**, TPOT **{held['tpot_ms_mape_pct']:.1f} %**, "
        f"throughput {held['throughput_tok_s_mape_pct']:.1f} %",
        f"TPOT {warm['holdout']['params_baseline_tpot_mape_pct']:.1f} %",
    ]


def _deploy_speedups(rows):
    """NNCF int8 full model TPOT / each subnet's TPOT (the table's 'speed-up vs (b)')."""
    nncf = next(r for r in rows if r["kind"] == "openvino-nncf-int8")
    return {r["name"]: nncf["tpot_ms"] / r["tpot_ms"] for r in rows if r["name"].startswith("subnet")}


DEPLOY = load("deploy_bench.json")
DEPLOY_PAIRED = "paired_with" in DEPLOY  # bench/deploy_bench.py since issue 10: per-item accuracy paired with (b)


UNPAIRED = load("deploy_bench_run2_unpaired.json") if DEPLOY_PAIRED else DEPLOY  # the run before the paired rerun


def _deploy_claims():
    run1, run2 = _deploy_speedups(load("deploy_bench_run1.json")["rows"]), _deploy_speedups(UNPAIRED["rows"])
    claims = _deploy_paired_claims() if DEPLOY_PAIRED else [
        f"on speed only in the second run ({run2['subnet int8']:.2f}×; run 1 measured {run1['subnet int8']:.2f}×)",
        f"| **{run2['subnet int8']:.2f}×** |"]
    claims.append(f"gave {run1['subnet int8']:.2f}× (int8) and {run1['subnet int4']:.2f}× (int4) decode speed-up")
    if DEPLOY_PAIRED:
        claims.append(f"at {run2['subnet int8']:.2f}× (int8) and {run2['subnet int4']:.2f}× (int4) decode speed-up over (b)")
        claims.append(f"`bench/results/deploy_bench.json` and `.md`, {DEPLOY['seconds']:.1f} s")
        heal = load("heal_l24-2ce7418a/hwnas_heal.json")
        b, a = heal["fidelity_before"], heal["fidelity_after"]
        claims.append(f"healed for {heal['steps_done']} steps ({heal['seconds']:.0f} s, `--train cheap`")
        claims.append(f"KL {b['kl']:.2f} → {a['kl']:.2f}, top-1 agreement {b['top1_agreement']:.2f} → {a['top1_agreement']:.2f}")
    return claims


def _deploy_paired_claims(res=None):
    """Each row's acc_norm ± stderr and its paired Δ vs (b) as bench/deploy_bench.md writes them, and the item count."""
    res = DEPLOY if res is None else res
    claims = [f"{res['items_total']:,} report items"]
    for r in res["rows"]:
        acc = r.get("accuracy") or {}
        own = ((acc.get("pct") or {}).get("acc_norm") or {}).get("overall")
        if own:
            claims.append(f"| {own['points']:.1f} ± {own['stderr']:.1f} |")
        if acc.get("vs_b"):
            d = acc["vs_b"]["acc_norm"]["overall"]
            lo, hi = d["ci95"]
            claims.append(f"| {d['points']:+.2f} ± {d['stderr']:.2f} [{lo:+.2f}, {hi:+.2f}] ({d['items']}) |")
    return claims


def test_deploy_bench_accuracy_rests_on_enough_paired_items():
    """Issue 10: the deploy table's accuracy columns are paired with (b) on at least 2,000 report items."""
    if not DEPLOY_PAIRED:
        pytest.skip("deploy_bench.json predates the paired accuracy columns (rerun bench/deploy_bench.py)")
    assert DEPLOY["items_total"] >= 2000
    for r in DEPLOY["rows"]:
        acc = r.get("accuracy")
        if acc and acc.get("vs_b"):
            assert acc["vs_b"]["acc_norm"]["overall"]["items"] == DEPLOY["items_total"], r["name"]


def _unstable_phrase(name: str) -> str:
    """How the pages name a run's rows whose spread stayed above the re-measure threshold, from the file."""
    rows = [r for r in load(name)["rows"] if not r["stable"]]
    parts = ["the NNCF int8 baseline (b)" for r in rows if r["kind"] == "openvino-nncf-int8"]
    subnets = [r["name"].removeprefix("subnet ") for r in rows if r["name"].startswith("subnet")]
    if subnets:
        parts.append(f"the {' and '.join(subnets)} subnet{'s' if len(subnets) > 1 else ''}")
    return " and ".join(parts)


def test_unstable_rows_named_on_the_pages_are_the_unstable_rows():
    assert f"in run 1 {_unstable_phrase('deploy_bench_run1.json')}" in FLAT
    older = "deploy_bench_run2_unpaired.json" if DEPLOY_PAIRED else "deploy_bench.json"
    assert (f"in run 2 {_unstable_phrase(older)}" if DEPLOY_PAIRED else f"in the run above {_unstable_phrase(older)}") in FLAT


def _search_claims():
    rm = load("search_untrained/remeasured.json")
    n_unstable = sum(not v["stable"] for v in rm.values())
    claims = [f"{n_unstable} of these {len(rm)} re-measured TPOTs stayed above the noise threshold"]
    pareto = {r["key"]: r for r in load("search_untrained/pareto.json")}
    for key, r in pareto.items():
        claims.append(f"| {key}")
        claims.append(f"| {rm[key]['tpot_ms']:.2f} | {r['vs_full']['tpot_speedup']:.2f}× |")
    full_key = next(k for k in rm if k not in pareto)
    full = next(r for r in map(json.loads, (RESULTS / "search_untrained/candidates.jsonl").read_text().splitlines())
                if r["key"] == full_key)
    full_report = next(r["report"] for r in map(json.loads, (RESULTS / "search_untrained/report.jsonl").read_text().splitlines())
                       if r["key"] == full_key)
    claims.append(f"| full model ({full['num_layers']} layers) | {100 * full['accuracy']:.1f} | {100 * full_report['accuracy']:.1f} "
                  f"| {rm[full_key]['tpot_ms']:.2f} | — |")
    return claims


def _train_claims():
    t = load("train_bench.json")
    ratios = {k: t["before"][k]["ppl"] / t["after"][k]["ppl"] for k in t["before"]}
    others = [v for k, v in ratios.items() if k != "largest"]
    drop = 1 - 1 / ratios["largest"]
    return [
        f"perplexity −{100 * drop:.0f}%",
        f"every other subnet's perplexity fell {math.floor(min(others))}–{round(max(others))}×",
    ]


def _heal_claims():
    d = load("heal_bench.json")
    claims = []
    for r in d["subnets"].values():
        for m in ("recovered", "healed_cheap", "healed_all"):
            x = r[m]
            a = x["acc_norm_vs_full"]
            claims.append(f"| {a['points']:+.2f} ± {a['stderr']:.2f} | {x['perplexity_ratio']:.2f}× | {x['token_kl']:.3f} | "
                          f"{x['top1_agreement']:.3f} |".replace("-", "−"))
            if m != "recovered":
                claims.append(f"| {x['steps']} / {x['heal_cpu_seconds']:.0f} |")
    return claims


def _heal_long_claims():
    """The 40-minute heal of l24-2ce7418a: before/after fidelity and paired accuracy, steps and seconds."""
    r = load("heal_bench_long.json")["subnets"]["l24-2ce7418a"]
    a, b = r["recovered"], r["healed_all"]
    acc = lambda x: f"{x['acc_norm_vs_full']['points']:.2f} ± {x['acc_norm_vs_full']['stderr']:.2f}".replace("-", "−")
    return [f"{b['steps']} steps in {b['heal_wall_seconds']:.0f} s ({b['heal_cpu_seconds']:,.0f} CPU s",
            f"perplexity ratio {a['perplexity_ratio']:.2f}× → {b['perplexity_ratio']:.2f}×",
            f"token KL {a['token_kl']:.3f} → {b['token_kl']:.3f}",
            f"top-1 agreement {a['top1_agreement']:.3f} → {b['top1_agreement']:.3f}",
            f"paired acc_norm {acc(a)} → {acc(b)} points on the same {b['acc_norm_vs_full']['items']:,} items"]


def _speculative_claims():
    rows = {r["config"]: r for r in load("speculative_bench.json")["rows"]}
    ds = load("draft_search_xeon/speculative.json")
    acc = [c["acceptance_rate"] for c in ds["candidates"]]
    out = [ds["verdict"],
           f"scored {len(ds['candidates'])} candidate drafts: greedy agreement with the full model "
           f"{100 * min(acc):.0f}–{100 * max(acc):.0f}% per token"]
    md = (RESULTS / "speculative_bench.md").read_text(encoding="utf-8")
    for line in md.splitlines():
        if line.startswith("| full int8 |") or line.startswith("| spec-search: speculative k=1"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out.append(f"| {cells[1]} | {cells[2].replace('x', '×')} |")
    return out


def _genquality_claims():
    d = load("genquality_calibration.json")
    out = []
    for c in d["candidates"]:
        a = c["aggregate"]
        out.append(f"| {a['prefix']:.3f} | {a['forced']:.3f} | {a['repeat_excess']:.3f} | {a['nll_excess']:+.3f} | "
                   f"{'pass' if c['passes_code_thresholds'] else 'FAIL'} |")
    assert all(d["requirements"].values()), d["requirements"]
    return out


def _signal_claims():
    d = load("signal_bench.json")
    rho = d["spearman_with_truth"]
    assert d["subnets_scored"] >= 20 and min(r["truth_items"] for r in d["rows"].values()) >= 2000
    return [f"| {rho['search_acc_points']:.2f} | the evaluation",
            f"| `choice_kl` on the same items | {rho['search_choice_kl (negated)']:.2f} |",
            f"| {rho['token_kl (negated)']:.2f} | median", f"| top-1 agreement, same text | {rho['top1_agreement']:.2f} |",
            f"{d['subnets_scored']} subnets spanning the space"]


def _noisy_host_claims():
    b = load("noisy_host_bench.json")["analysis"]
    rm = b["estimators"]["round_min"]
    q, ld = rm["quiet"]["pick_tpot_speedup"], rm["loaded"]["pick_tpot_speedup"]
    p3, p6 = load("noisy_host_profile_repeats3.json"), load("noisy_host_profile.json")
    e6, h6 = p6["latency_model_error"], p6["holdout"]
    return [
        f"| `round_min` (default) | {rm['loaded']['loo_mape_pct']['tpot']:.1f}% / {rm['loaded']['loo_mape_pct']['ttft']:.1f}% "
        f"| {rm['loaded']['holdout_mape_pct']['tpot']:.1f}% / {rm['loaded']['holdout_mape_pct']['ttft']:.1f}% "
        f"| {q['value']:.3f}× [{q['ci_low']:.3f}, {q['ci_high']:.3f}] → {ld['value']:.3f}× [{ld['ci_low']:.3f}, {ld['ci_high']:.3f}] "
        f"| {100 * (ld['value'] / q['value'] - 1):+.1f}% |".replace("| -", "| −"),
        f"set aside {b['rounds']['quiet'] - b['clean_rounds']['quiet']} of {b['rounds']['quiet']} quiet rounds",
        f"leave-one-out TPOT MAPE was {p3['latency_model_error']['tpot_ms_mape_pct']:.1f}% "
        f"(TTFT {p3['latency_model_error']['ttft_ms_mape_pct']:.1f}%) in {p3['wall_s']:.1f} s",
        f"**TPOT {e6['tpot_ms_mape_pct']:.1f}%, TTFT {e6['ttft_ms_mape_pct']:.1f}%** leave-one-out and TPOT "
        f"{h6['tpot_ms_mape_pct']:.1f}%, TTFT {h6['ttft_ms_mape_pct']:.1f}% on {h6['n_subnets']} held-out subnets, in **{p6['wall_s']:.1f} s**",
    ]


def _demo_claims(folder: str):
    """A `bench/demo_bench.sh` run: its total seconds, each front subnet's select-split drop and speed-up, and the
    shipped bundle's holdout difference."""
    t = load(f"{folder}/demo_timing.json")
    out = [f"**{t['total_s']} s**"]
    for r in load(f"{folder}/pareto.json"):
        p = (r.get("report") or {}).get("paired")
        if r.get("full_model") or not p:
            continue
        v = r["vs_full"]
        lo, hi = v["tpot_speedup_ci95"]
        out.append(f"| {-p['points']:.2f} ± {p['stderr']:.2f} | {v['tpot_speedup']:.2f}× [{lo:.2f}, {hi:.2f}] |")
    h = load(f"{folder}/bundle_manifest.json")["accuracy"]["vs_full"]["acc_norm"]["overall"]  # the shipped bundle's holdout
    out += [f"{h['points']:+.2f} ± {h['stderr']:.2f} points".replace("-", "−"), f"{h['items']:,} items"]
    return out


DEMO_RUNS = [d for d in ("demo_24evals", "demo_16evals_v1", "demo_main_job", "demo_cold") if (RESULTS / d / "demo_timing.json").is_file()]


CLAIMS = [("signal", c) for c in _signal_claims()] + [("genquality", c) for c in _genquality_claims()] + [("speculative", c) for c in _speculative_claims()] + [("heal", c) for c in _heal_claims()] + [("heal long", c) for c in _heal_long_claims()] + [("noisy host", c) for c in _noisy_host_claims()] + [("profile", c) for c in _profile_claims()] + [("deploy", c) for c in _deploy_claims()] \
    + [("search", c) for c in _search_claims()] + [("train", c) for c in _train_claims()] \
    + [("demo", c) for d in DEMO_RUNS for c in _demo_claims(d)]


@pytest.mark.parametrize("section, claim", CLAIMS, ids=[f"{s}:{c[:50]}" for s, c in CLAIMS])
def test_the_pages_state_what_the_results_file_says(section, claim):
    assert states(FLAT, claim, section), f"README or docs/ ({section}) should say {claim!r}, as its results file does"


def states(text: str, claim: str, section: str = "") -> bool:
    if section == "deploy":
        text = text.replace("\u2212", "-")  # the table may print minus as U+2212
    return flat(claim) in text


def test_readme_drops_the_unbacked_figures():
    """Figures the issue found contradicted by, or missing from, the committed results files."""
    for stale in ("**160 s**", "6.4 / 4.5 / 4.2", "took **13 min**", "9 min 26 s", "3–300×",
                  "met on speed and size", "this host's profile latency model"):
        assert stale not in FLAT, stale


# ---------------------------------------------------------------------------- links between the pages
FUTURE_PAGES = {"search-genes.md", "frontier.md", "larger-models.md", "tasks.md", "cluster.md"}  # other issues add these


def _anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for h in re.findall(r"^#+\s+(.*)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        out.add(re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-"))
    return out


def _local_links(page: str) -> list[tuple[Path, str]]:
    base = (ROOT / page).parent
    text = re.sub(r"```.*?```", "", PAGES[page], flags=re.S)
    links = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        links.append(((base / path).resolve() if path else ROOT / page, anchor))
    return links


@pytest.mark.parametrize("page", list(PAGES))
def test_links_between_pages_resolve(page):
    """Every relative link names a file that exists and, for a markdown page, a heading it has."""
    for path, anchor in _local_links(page):
        if path.name in FUTURE_PAGES and path.parent == ROOT / "docs":
            continue
        assert path.exists(), f"{page}: link to missing {path.relative_to(ROOT)}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path.read_text(encoding="utf-8")), f"{page}: no heading #{anchor} in {path.name}"
