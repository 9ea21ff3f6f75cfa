"""Real validation of a subnet for the search: accuracy through the supernet, latency on the target.

`SubnetValidator(cfg)` returns what `hwnas.search.loop.run_search` needs:

- accuracy on the tasks' **search** split, scored through `Supernet.subnet(cfg)` by a `TaskSuite`
  that tokenized the items once (per task and the mean over tasks; `acc_norm` by default, as
  lm-evaluation-harness headlines ARC and PIQA; MMLU's acc and acc_norm coincide);
- TTFT / TPOT / throughput of the target's workload: the dense subnet is extracted, exported to
  a stateful OpenVINO IR (cached by model and subnet key) and timed on this CPU
  (``latency_source: "measured"``), or, when a profile from another machine is given, predicted
  by that profile's latency model (``latency_source: "predicted"``);
- parameter count and weight bytes (size of the exported IR's weights; f32 bytes when predicted);
- with deployment genes (`SubnetConfig.weight_formats`, `head_format`, `runtime`): accuracy of the
  supernet slice with each weight fake-quantized in its format (`hwnas.model.fakequant`, after
  recovery), and latency of the integer IR in those formats (`hwnas.hardware.quant_ir`, built in
  memory from the architecture's cached float IR) compiled with the runtime settings over the
  target's properties; weight bytes are then the shipped bytes (codes, scales, zero points). Runtime
  values that change numerics (KV-cache precision, dynamic quantization, bf16) add their choice-KL
  effect measured once per model through the IR (`runtime_effects`). The report split is scored with
  the fake-quantized weights in torch too (equal to the integer IR within 2e-3 on logits; the runtime
  settings' effect is not in its paired accuracy, only in the search signal): through OpenVINO it cost
  ~6-17 minutes per front candidate on 2 cores (2,183 items), more than the whole search. `report_through_ir=True` scores it through each candidate's
  IR with its runtime settings instead (`accuracy_ir`); what ships is scored through its IR on the
  holdout split at export either way;
- ``signal``, what the search ranks the accuracy objective by (``metric``): the accuracy itself for
  ``acc_norm`` / ``acc``; -ln(1 + KL) to the full model for ``choice_kl`` (the mean KL of the
  answer-choice distributions on the same search-split items, free with the accuracy) and
  ``token_kl`` (next-token KL on WikiText-2 search-split windows, a `TokenFidelity` given to the
  validator; the full model's reference pass is made once and kept). ``accuracy`` is then still
  ``acc_norm``, for display and the pick rule;
- ``paired``: the paired difference from the full model over the tasks on which the full model is
  above chance (``pick_tasks``; decided once, see `SubnetValidator.chance_tests`), flagged
  ``at_chance`` when there is none, unless ``include_chance_tasks``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hwnas.errors import SearchError
from hwnas.model.space import SubnetConfig
from hwnas.search.objectives import ACCURACY_METRICS, SEARCH_METRICS, fidelity_signal

log = logging.getLogger(__name__)

__all__ = ["ACCURACY_METRICS", "SEARCH_METRICS", "SubnetValidator"]

# The report split is scored in two looks: every REPORT_LOOK-th item first, and a candidate stops there when
# its drop is beyond every pick rule by EARLY_STOP_Z standard errors (a candidate whose true drop is within
# the rules stops by chance with probability < 0.2%, one-sided, at that first look).
REPORT_LOOK = 3
EARLY_STOP_Z = 3.0


class SubnetValidator:
    """Callable `cfg -> measured objectives` over one supernet, one task suite and one target."""

    def __init__(
        self,
        supernet: Any,
        suite: Any,
        *,
        target: Any = None,
        model_id: str = "model",
        metric: str = "acc_norm",
        latency_model: Any = None,
        host: Any = None,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        status: Callable[[str], None] | None = None,
        reference_key: str | None = None,
        fidelity: Any = None,
        include_chance_tasks: bool = False,
        ir_scorer: Callable[..., dict[str, Any]] | None = None,
        report_through_ir: bool = False,
        generation_reference: Callable[[], Any] | None = None,
    ):
        if metric not in SEARCH_METRICS:
            raise SearchError(f"unknown --metric {metric!r}; accepted: {', '.join(SEARCH_METRICS)}")
        if latency_model is None and target is None:
            raise SearchError("validation needs a target to measure on, or a profile's latency model")
        if metric == "token_kl" and fidelity is None:
            raise SearchError("--metric token_kl needs the text to compare on (a TokenFidelity)")
        self.supernet = supernet
        self.suite = suite
        self.target = target
        self.model_id = model_id
        self.reference_key = reference_key or model_id  # the full model's per-item cache (same as eval/export)
        self.signal_metric = metric                                            # ranks the search
        self.metric = metric if metric in ACCURACY_METRICS else "acc_norm"  # accuracy shown and paired
        self.fidelity = fidelity
        self.latency_model = latency_model
        self.host = host
        self.seed = seed
        self.cache_dir = cache_dir
        self.status = status or (lambda msg: None)
        self.include_chance_tasks = include_chance_tasks
        self._chance: dict[str, Any] | None = None  # ChanceTest per task (decided once)
        self._chance_suite: Any = None  # the report suite, once `report` is asked for
        self._subsuites: dict[tuple, Any] = {}  # report suites restricted to the pick rule's tasks
        self._looks: dict[int, tuple[Any, Any]] = {}  # report suite -> (first look's items, the others)
        # (IR folder, TaskSuite, compile properties[, context_in_cache=]) -> suite.evaluate-like result with
        # "_items", scored with OpenVINO: what runtime genes do to accuracy cannot be seen in torch (`runtime_effects`)
        self.ir_scorer = ir_scorer
        self.report_through_ir = report_through_ir
        self._runtime_effects: dict[str, dict[str, float]] | None = None
        self.seconds: dict[str, float] = {}   # wall seconds per stage, summed over the run (stage_seconds.json)
        # () -> the full model's greedy generations (hwnas.accuracy.genquality.Reference), asked for once by
        # the first generation screen; None: no screen
        self.generation_reference = generation_reference
        self._reference: Any = None

    # ------------------------------------------------------------------ accuracy
    def accuracy(self, cfg: SubnetConfig | None, suite: Any = None) -> dict[str, Any]:
        """Mean and per-task accuracy of `cfg` (None = the full model) on `suite` (default: the search split),
        with the paired difference from the full model on the same items (``vs_full``, points ± stderr)."""
        from hwnas.accuracy.paired import full_model_items

        suite = suite or self.suite
        t0 = time.perf_counter()
        is_full = cfg is None or cfg == self.supernet.full_config()
        unscored: list[str] = []
        if not is_full and suite is not self.suite:
            suite, unscored = self._pick_tasks_only(suite)
        early = None
        if is_full and all(d.requests is not None for d in suite.data.values()):
            ev = self._full_from_cache(suite)   # the full model's items are cached: scoring it again costs minutes
            full_items = ev["_items"]
        elif not is_full and suite is not self.suite and all(d.requests is not None for d in suite.data.values()):
            ev, suite, early = self._score_in_two_looks(cfg, suite)
            full_items = full_model_items(suite, self.supernet, self.reference_key)
        else:
            ev = suite.evaluate(self.supernet, subnet=cfg, keep_items=True)
            full_items = full_model_items(suite, self.supernet, self.reference_key, scored=ev["_items"] if is_full else None)
        rec = self._record(ev, full_items, suite, t0, is_full=is_full)
        rec["scored_with"] = "torch"   # fake-quantized weights for a candidate with genes (hwnas.model.fakequant)
        if early:
            rec["stopped_early"] = early
        if unscored:   # left out of the pick rule as at chance, and so not scored
            rec["unscored_tasks"] = unscored
            rec["chance_tasks"] = [n for n in self.chance_tests() if n in set(rec["chance_tasks"]) | set(unscored)]
        return rec

    def _score_in_two_looks(self, cfg: SubnetConfig, suite: Any) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
        """A candidate's report split in two looks: every `REPORT_LOOK`-th item first. When the paired drop
        there is beyond every pick rule's points by `EARLY_STOP_Z` standard errors, no rule can take the
        candidate: it stops, and its record is that of the items scored (``stopped_early`` says so). Else
        the other items are scored and the record is the whole split's, exactly as in one pass.
        Returns (evaluate-like result with ``_items``, the suite it covers, the early-stop note or None)."""
        from hwnas.accuracy.evaluate import task_metrics
        from hwnas.accuracy.items import merge_every
        from hwnas.accuracy.paired import compare_items, full_model_items
        from hwnas.search.picking import PICK_POINTS, drop_beyond

        key = id(suite)
        if key not in self._looks:
            self._looks[key] = suite.every(REPORT_LOOK)
        first, rest = self._looks[key]
        ev1 = first.evaluate(self.supernet, subnet=cfg, keep_items=True)
        chance = [n for n, t in self.chance_tests().items() if not t.above]
        cmp = compare_items(ev1["_items"], full_model_items(first, self.supernet, self.reference_key), self.metric,
                            include_chance=self.include_chance_tasks, chance_tasks=chance)
        p = cmp["overall"]
        bound = max(PICK_POINTS)
        if not cmp["no_task_above_chance"] and drop_beyond(p, bound, EARLY_STOP_Z):
            return ev1, first, {"items": first.n_items, "of": suite.n_items, "z": EARLY_STOP_Z, "beyond_points": bound,
                                "why": (f"drop {-p['points']:.2f} ± {p['stderr']:.2f} points on the first "
                                        f"{first.n_items} of {suite.n_items} items is beyond {bound:g} points by more "
                                        f"than {EARLY_STOP_Z:g} standard errors: no pick rule can take it")}
        ev2 = rest.evaluate(self.supernet, subnet=cfg, keep_items=True)
        items = {n: merge_every(ev1["_items"][n], ev2["_items"][n], REPORT_LOOK) for n in ev1["_items"]}
        return {"tasks": {n: task_metrics(it) for n, it in items.items()}, "items": suite.n_items, "_items": items}, \
            suite, None

    def _pick_tasks_only(self, suite: Any) -> tuple[Any, list[str]]:
        """On a report split, a candidate is scored on the tasks the pick rule uses: those where the full
        model is above chance (its items on this split decide), unless `include_chance_tasks`. The others
        support no claim, and scoring them (MMLU on the default model) was half of a cold main job's
        report time. Returns (suite, tasks left unscored)."""
        if self.include_chance_tasks:
            return suite, []
        if self._chance is None:
            self._chance_suite = self._chance_suite or suite
        from hwnas.accuracy.chance import scored_tasks

        pick, unscored = scored_tasks(list(suite.data), self.chance_tests())
        if not unscored:
            return suite, []
        key = (id(suite), tuple(pick))
        if key not in self._subsuites:
            self._subsuites[key] = suite.only(pick)
        return self._subsuites[key], unscored

    def _record(self, ev: dict[str, Any], full_items: Any, suite: Any, t0: float, *,
                is_full: bool = False) -> dict[str, Any]:
        """The accuracy record of one scoring `ev`, paired with the full model's items on the same suite."""
        from hwnas.accuracy.paired import compare_items

        tasks = {}
        for name, r in ev["tasks"].items():
            if r.get(self.metric) is not None:
                tasks[name] = round(float(r[self.metric]), 6)
            elif r.get("acc") is not None:
                tasks[name] = round(float(r["acc"]), 6)
        if not tasks:
            raise SearchError("the search tasks give no accuracy (perplexity-only tasks cannot be searched on)")
        chance = self.chance_tests()
        paired = compare_items(ev["_items"], full_items, self.metric, include_chance=self.include_chance_tasks,
                               chance_tasks=[n for n, t in chance.items() if not t.above])
        overall = dict(paired["overall"])
        if paired["no_task_above_chance"] and not self.include_chance_tasks:
            overall["at_chance"] = True   # no task supports an equal-accuracy claim: the pick rule skips it
        pick_tasks = paired["overall_tasks"] if not paired["no_task_above_chance"] else []
        return {
            "accuracy": round(sum(tasks.values()) / len(tasks), 6),
            # the mean over the pick rule's tasks: what a candidate scored on those alone is compared with
            "pick_accuracy": round(sum(tasks[n] for n in pick_tasks) / len(pick_tasks), 6) if pick_tasks else None,
            "tasks": tasks,
            "accuracy_metric": self.metric,
            "items": ev.get("items"),
            "paired": overall,
            "pick_tasks": pick_tasks,
            "chance_tasks": paired["chance_tasks"],
            **({"chance": {n: t.to_dict() for n, t in chance.items()},
                "include_chance_tasks": self.include_chance_tasks} if is_full else {}),
            "paired_tasks": {n: {k: t[k] for k in ("points", "stderr", "items")} for n, t in paired["tasks"].items()},
            "choice_kl": paired["choice_kl"],
            "split": suite.split,
            "eval_s": round(time.perf_counter() - t0, 3),
        }

    def chance_tests(self) -> dict[str, Any]:
        """Per task, the full model's score against the task's chance rate (`hwnas.accuracy.chance`)
        on the split the pick rule pairs on (the report suite given to `report`, else the search
        suite), decided once and applied to every split, so every record leaves out the same tasks.
        Tasks where it is not above chance leave the pick rule's paired mean unless
        `include_chance_tasks`. (The full model's per-item results are cached: no extra scoring.)"""
        if self._chance is None:
            from hwnas.accuracy.chance import chance_tests
            from hwnas.accuracy.paired import full_model_items

            suite = self._chance_suite or self.suite
            self._chance = chance_tests(full_model_items(suite, self.supernet, self.reference_key), self.metric)
            for t in self._chance.values():
                if not t.above:
                    log.warning("%s; %s", t.describe(), "kept in the pick rule (--include-chance-tasks)"
                                if self.include_chance_tasks else "left out of the pick rule")
        return self._chance

    def accuracy_ir(self, cfg: SubnetConfig, suite: Any = None, *, context_in_cache: bool = False) -> dict[str, Any]:
        """Like `accuracy`, but scored through `cfg`'s integer IR (its weight formats) compiled with its runtime
        settings over the target's properties: the accuracy of exactly what ships, runtime numerics included.
        `context_in_cache`: the choices read the context back from the KV cache (`hwnas.deploy.ir_accuracy`),
        so the cache's precision acts on the score too."""
        import tempfile

        from hwnas.accuracy.paired import full_model_items
        from hwnas.hardware.quant_ir import runtime_properties, save_quantized_ir

        if self.ir_scorer is None:
            raise SearchError("scoring through the IR needs an ir_scorer")
        suite = suite or self.suite
        t0 = time.perf_counter()
        ir, _ = self._ir(cfg)
        props = runtime_properties(self.target.resolved_properties(self.host), cfg)
        with tempfile.TemporaryDirectory(prefix="hwnas-qir-") as tmp:
            folder = save_quantized_ir(ir, cfg, Path(tmp) / "ir")
            ev = (self.ir_scorer(folder, suite, props, context_in_cache=True) if context_in_cache
                  else self.ir_scorer(folder, suite, props))
        ev.setdefault("items", suite.n_items)
        full_items = full_model_items(suite, self.supernet, self.reference_key)
        rec = self._record(ev, full_items, suite, t0)
        rec["scored_with"] = "openvino"
        return rec

    # ------------------------------------------------------------------ runtime genes' accuracy effect
    def runtime_effects(self) -> dict[str, dict[str, float]]:
        """Choice-KL added by each numeric runtime value, measured once per model (`hwnas.search.runtime_effects`)."""
        if self._runtime_effects is None:
            from hwnas.search.runtime_effects import measure_runtime_effects

            t0 = time.perf_counter()
            self._runtime_effects = measure_runtime_effects(self)
            self._tally("runtime_effects", t0)
        return self._runtime_effects

    def runtime_kl(self, cfg: SubnetConfig) -> float:
        """The summed choice-KL effect of `cfg`'s runtime values (`runtime_effects`)."""
        eff = self.runtime_effects()
        return float(sum(eff.get(p, {}).get(str(v), 0.0) for p, v in cfg.runtime))

    def _tally(self, stage: str, t0: float) -> None:
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - t0, 3)

    def _full_from_cache(self, suite: Any) -> dict[str, Any]:
        """`suite.evaluate`'s multiple-choice result for the full model, from its per-item cache
        (scored once when items are missing)."""
        from hwnas.accuracy.evaluate import task_metrics
        from hwnas.accuracy.paired import full_model_items

        items = full_model_items(suite, self.supernet, self.reference_key)
        return {"tasks": {n: task_metrics(it) for n, it in items.items()},
                "items": suite.n_items, "_items": items}

    # ------------------------------------------------------------------ the search signal
    def signal(self, cfg: SubnetConfig | None, acc: dict[str, Any]) -> dict[str, Any]:
        """What ranks `cfg`'s accuracy objective (higher is better), given its `accuracy(cfg)` record."""
        out: dict[str, Any] = {"signal_metric": self.signal_metric}
        if self.signal_metric in ACCURACY_METRICS:
            out["signal"] = acc["accuracy"]
        elif self.signal_metric == "choice_kl":
            if acc.get("choice_kl") is None:
                raise SearchError("--metric choice_kl needs multiple-choice tasks; the search tasks have no answer choices")
            out["signal"] = round(fidelity_signal(acc["choice_kl"]), 6)
        else:  # token_kl
            self.status(f"token KL {cfg.describe() if cfg is not None else 'full model'}")
            tok = self.fidelity.measure(self.supernet, cfg)  # the first call also makes the reference pass
            out["token_fidelity"] = tok
            out["signal"] = round(fidelity_signal(tok["kl"]), 6)
        return out

    # ------------------------------------------------------------------ latency
    def latency(self, cfg: SubnetConfig) -> dict[str, Any]:
        n_params = cfg.n_params(self.supernet.config)
        if self.latency_model is not None:
            p = self.latency_model.predict(cfg)
            return {
                "tpot_ms": round(float(p["tpot_ms"]), 4), "ttft_ms": round(float(p["ttft_ms"]), 4),
                "throughput_tok_s": round(float(p["throughput_tok_s"]), 4), "latency_source": "predicted",
                "n_params": n_params, "weight_bytes": 4 * n_params,
            }
        t0 = time.perf_counter()
        self.status(f"export {cfg.describe()}")
        ir, fresh = self._ir(cfg)
        t1 = time.perf_counter()
        self.status(f"measure {cfg.describe()}")
        out = time_ir(ir, cfg, self.target, host=self.host, seed=self.seed, n_params=n_params)
        out.update({"export_s": round(t1 - t0 + out.pop("quantize_s"), 3), "ir_cached": not fresh})
        return out

    def _ir(self, cfg: SubnetConfig) -> tuple[Path, bool]:
        """The float IR of the subnet's architecture from the cache (one per architecture, shared by its
        format variants); extracted from the supernet and exported only on a miss."""
        from hwnas.hardware.irexport import export_ir_cached

        arch = cfg.architecture()
        return export_ir_cached(key=f"{self.model_id}-{arch.key}", build=lambda: self.supernet.extract(arch),
                                cache_dir=self.cache_dir)

    def remeasure(self, cfgs: list[SubnetConfig]) -> dict[str, dict[str, Any]]:
        """Time `cfgs` again in one session with interleaved repeats (a fair comparison on a busy
        machine). When latency came from a profile's model, the front is measured here only if the
        profile was made on this host (the search then measures just its front, once); a profile from
        another machine predicts for that machine, and nothing is measured (empty)."""
        if not cfgs or self.target is None:
            return {}
        if self.latency_model is not None and (self.host is None or getattr(self.latency_model, "host_fingerprint", None)
                                               != getattr(self.host, "fingerprint", "")):
            return {}
        irs = []
        for cfg in cfgs:
            self.status(f"export {cfg.describe()}")
            irs.append((cfg, self._ir(cfg)[0]))
        self.status(f"re-measuring {len(irs)} subnets (interleaved)")
        t_re = time.perf_counter()
        out = remeasure_irs(irs, self.target, host=self.host, seed=self.seed, model_config=self.supernet.config,
                            full_key=self.supernet.space.largest().key)
        self._tally("remeasure_front", t_re)
        return out

    # ------------------------------------------------------------------ the protocol
    def __call__(self, cfg: SubnetConfig) -> dict[str, Any]:
        out = self.score(cfg)
        t1 = time.perf_counter()
        out.update(self.latency(cfg))
        self._tally("search_latency", t1)
        for k in ("export_s", "measure_s"):
            if k in out:
                self.seconds[f"search_latency_{k[:-2]}"] = round(self.seconds.get(f"search_latency_{k[:-2]}", 0) + out[k], 3)
        return out

    def score(self, cfg: SubnetConfig) -> dict[str, Any]:
        """Everything but latency: accuracy (with runtime genes' effect) and the search signal. A cluster
        run calls this in accuracy actors and times the IR on target nodes (`hwnas.search.cluster`)."""
        self.status(f"accuracy {cfg.describe()}")
        t0 = time.perf_counter()
        out = self.accuracy(cfg)
        self._tally("search_accuracy", t0)
        if cfg.runtime and out.get("choice_kl") is not None and self.runtime_effects():
            extra = self.runtime_kl(cfg)
            out["choice_kl_weights"] = out["choice_kl"]   # fake-quantized torch slice alone
            out["runtime_kl"] = round(extra, 6)
            out["choice_kl"] = round(max(0.0, out["choice_kl"] + extra), 6)
        out.update(self.signal(cfg, out))
        return out

    def generation_screen(self, cfg: SubnetConfig) -> dict[str, Any]:
        """The generation check on `cfg`'s weights in PyTorch (the supernet slice, fake-quantized as it
        ships), the prompts decoded in one batch: a few seconds on the default model where a report
        scoring takes minutes. `evaluate_reports` scores the report split only of records that pass."""
        from hwnas.accuracy.genquality import TorchCandidate, check_candidate

        if self.generation_reference is None:
            raise SearchError("this validator has no generation reference to screen against")
        if self._reference is None:
            self.status("generation check: the full model's reference generations")
            t0 = time.perf_counter()
            self._reference = self.generation_reference()
            self._tally("generation_reference", t0)
        ref = self._reference
        self.status(f"generation check {cfg.describe()}")
        t0 = time.perf_counter()
        with self.supernet.subnet(cfg) as model:
            rep, _ = check_candidate(TorchCandidate(model, ref.eos_ids), ref, batched=True)
        self._tally("generation_screen", t0)
        return {"passed": rep.passed, "summary": rep.summary(), "report": rep.to_dict(), "scored_with": "torch",
                "seconds": round(time.perf_counter() - t0, 2)}

    def report(self, suite: Any) -> Callable[[SubnetConfig], dict[str, Any]]:
        """A `report(cfg)` callable for run_search: paired accuracy on another split (select / holdout)."""
        if self._chance is None:
            self._chance_suite = suite  # the pick rule pairs on this split: chance is judged on it too

        def report(cfg: SubnetConfig) -> dict[str, Any]:
            self.status(f"{suite.split} split {cfg.describe()}")
            t0 = time.perf_counter()
            try:
                if (self.report_through_ir and cfg.has_deploy_genes and self.ir_scorer is not None
                        and self.target is not None):
                    return self.accuracy_ir(cfg, suite)   # slow: every front candidate through OpenVINO
                return self.accuracy(cfg, suite)
            finally:
                self._tally("report_split", t0)

        return report



# ---------------------------------------------------------------------------- timing an IR (any node)
def time_ir(ir: Path, cfg: SubnetConfig, target: Any, *, host: Any = None, seed: int = 0,
            n_params: int = 0) -> dict[str, Any]:
    """The latency fields of a search record: `cfg`'s float IR timed on this host as it ships (with
    deployment genes: integer weights in its formats, its runtime settings over the target's)."""
    from hwnas.hardware.measure import measure_ir

    build, props, weight_bytes = None, None, None
    t0 = time.perf_counter()
    if cfg.has_deploy_genes:
        from hwnas.hardware.quant_ir import quantized_model, shipped_bytes

        model, summary = quantized_model(ir, cfg)
        build, props, weight_bytes = (lambda: model), dict(cfg.runtime), shipped_bytes(summary, ir)
    t1 = time.perf_counter()
    m = measure_ir(ir, target, host=host, subnet_key=cfg.key, subnet=cfg.to_dict(),
                   mlp_widths=cfg.mlp_widths, n_params=n_params, seed=seed, properties=props, build=build)
    t2 = time.perf_counter()
    lat = m.batch(m.latency_batch_size)
    if weight_bytes is None:
        weight_bytes = sum(f.stat().st_size for f in Path(ir).glob("*.bin"))
    return {
        "tpot_ms": round(m.tpot_ms, 4), "ttft_ms": round(m.ttft_ms, 4),
        "throughput_tok_s": round(m.throughput_tok_s, 4), "latency_source": "measured",
        "latency_stable": m.stable, "tpot_cv": round(float(lat.tpot_cv), 4),
        "host_fingerprint": m.host_fingerprint,
        "n_params": n_params, "weight_bytes": int(weight_bytes),
        "measure_s": round(t2 - t1, 3), "quantize_s": round(t1 - t0, 3),   # integer IR built in memory (genes)
        **({"timed_properties": {k: v for k, v in m.properties.items() if k in dict(cfg.runtime)}}
           if cfg.runtime else {}),
    }


def remeasure_irs(irs: list[tuple[SubnetConfig, Path]], target: Any, *, host: Any = None, seed: int = 0,
                  model_config: Any = None, full_key: str = "",
                  n_params: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """Time the IRs again in one session with interleaved repeats; per subnet key, the re-measured
    figures and paired speed-ups against `full_key`'s. Parameter counts from `model_config`, or given."""
    from hwnas.hardware.measure import MeasureJob, measure_many, speedup

    jobs = []
    for j, (cfg, ir) in enumerate(irs):
        build = None
        if cfg.has_deploy_genes:
            from hwnas.hardware.quant_ir import quantized_model

            build = (lambda ir=ir, cfg=cfg: quantized_model(ir, cfg)[0])   # compressed when compiled
        jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), tuple(cfg.mlp_widths),
                               n_params[j] if n_params is not None else cfg.n_params(model_config),
                               properties=dict(cfg.runtime) or None, build=build))
    ms = measure_many(jobs, target, host=host, seed=seed)
    full = next((m for m in ms if m.subnet_key == full_key), None)
    out = {}
    for m in ms:
        lat = m.batch(m.latency_batch_size)
        rec = {"tpot_ms": round(m.tpot_ms, 4), "ttft_ms": round(m.ttft_ms, 4),
               "throughput_tok_s": round(m.throughput_tok_s, 4), "stable": m.stable, "session": "interleaved",
               "session_id": m.session.get("id"), "estimator": lat.estimator,
               "tpot_ci95_ms": list(lat.tpot_ci_ms or []), "ttft_ci95_ms": list(lat.ttft_ci_ms or [])}
        if m.note:
            rec["note"] = m.note
        if full is not None and m is not full:
            # speed-ups as paired ratios over the rounds both kept, with a bootstrap interval
            rec["vs_full"] = {k: speedup(m, full, metric, seed=seed)
                              for k, metric in (("tpot_speedup", "tpot_ms"), ("ttft_speedup", "ttft_ms"),
                                                ("throughput_ratio", "throughput_tok_s"))}
        out[m.subnet_key] = rec
    return out
