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
  target's properties; weight bytes are then the shipped bytes (codes, scales, zero points);
- ``signal``, what the search ranks the accuracy objective by (``metric``): the accuracy itself for
  ``acc_norm`` / ``acc``; -ln(1 + KL) to the full model for ``choice_kl`` (the mean KL of the
  answer-choice distributions on the same search-split items, free with the accuracy) and
  ``token_kl`` (next-token KL on WikiText-2 search-split windows, a `TokenFidelity` given to the
  validator; the full model's reference pass is made once and kept). ``accuracy`` is then still
  ``acc_norm``, for display and the pick rule.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from hwnas.errors import SearchError
from hwnas.model.space import SubnetConfig
from hwnas.search.objectives import ACCURACY_METRICS, SEARCH_METRICS, fidelity_signal

log = logging.getLogger(__name__)

__all__ = ["ACCURACY_METRICS", "SEARCH_METRICS", "SubnetValidator"]


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

    # ------------------------------------------------------------------ accuracy
    def accuracy(self, cfg: SubnetConfig | None, suite: Any = None) -> dict[str, Any]:
        """Mean and per-task accuracy of `cfg` (None = the full model) on `suite` (default: the search split),
        with the paired difference from the full model on the same items (``vs_full``, points ± stderr)."""
        from hwnas.accuracy.paired import compare_items, full_model_items

        suite = suite or self.suite
        t0 = time.perf_counter()
        is_full = cfg is None or cfg == self.supernet.full_config()
        if is_full and all(d.requests is not None for d in suite.data.values()):
            ev = self._full_from_cache(suite)   # the full model's items are cached: scoring it again costs minutes
            full_items = ev["_items"]
        else:
            ev = suite.evaluate(self.supernet, subnet=cfg, keep_items=True)
            full_items = full_model_items(suite, self.supernet, self.reference_key, scored=ev["_items"] if is_full else None)
        tasks = {}
        for name, r in ev["tasks"].items():
            if r.get(self.metric) is not None:
                tasks[name] = round(float(r[self.metric]), 6)
            elif r.get("acc") is not None:
                tasks[name] = round(float(r["acc"]), 6)
        if not tasks:
            raise SearchError("the search tasks give no accuracy (perplexity-only tasks cannot be searched on)")
        paired = compare_items(ev["_items"], full_items, self.metric)
        return {
            "accuracy": round(sum(tasks.values()) / len(tasks), 6),
            "tasks": tasks,
            "accuracy_metric": self.metric,
            "items": ev.get("items"),
            "paired": paired["overall"],
            "paired_tasks": {n: {k: t[k] for k in ("points", "stderr", "items")} for n, t in paired["tasks"].items()},
            "choice_kl": paired["choice_kl"],
            "split": suite.split,
            "eval_s": round(time.perf_counter() - t0, 3),
        }

    def _full_from_cache(self, suite: Any) -> dict[str, Any]:
        """`suite.evaluate`'s multiple-choice result for the full model, from its per-item cache
        (scored once when items are missing)."""
        from hwnas.accuracy.evaluate import mc_metrics
        from hwnas.accuracy.paired import full_model_items

        items = full_model_items(suite, self.supernet, self.reference_key)
        return {"tasks": {n: mc_metrics(it.lls, it.golds, it.choice_bytes) for n, it in items.items()},
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
        from hwnas.hardware.measure import measure_ir

        t0 = time.perf_counter()
        self.status(f"export {cfg.describe()}")
        ir, fresh = self._ir(cfg)
        build, props, weight_bytes = None, None, None
        if cfg.has_deploy_genes:
            # timed as it ships: integer weights in its formats, its runtime settings over the target's
            from hwnas.hardware.quant_ir import quantized_model, shipped_bytes

            model, summary = quantized_model(ir, cfg)
            build, props, weight_bytes = (lambda: model), dict(cfg.runtime), shipped_bytes(summary, ir)
        t1 = time.perf_counter()
        self.status(f"measure {cfg.describe()}")
        m = measure_ir(ir, self.target, host=self.host, subnet_key=cfg.key, subnet=cfg.to_dict(),
                       mlp_widths=cfg.mlp_widths, n_params=n_params, seed=self.seed, properties=props, build=build)
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
            "export_s": round(t1 - t0, 3), "measure_s": round(t2 - t1, 3), "ir_cached": not fresh,
            **({"timed_properties": {k: v for k, v in m.properties.items() if k in dict(cfg.runtime)}}
               if cfg.runtime else {}),
        }

    def _ir(self, cfg: SubnetConfig) -> tuple[Path, bool]:
        """The float IR of the subnet's architecture from the cache (one per architecture, shared by its
        format variants); extracted from the supernet and exported only on a miss."""
        from hwnas.hardware.irexport import export_ir_cached

        arch = cfg.architecture()
        return export_ir_cached(key=f"{self.model_id}-{arch.key}", build=lambda: self.supernet.extract(arch),
                                cache_dir=self.cache_dir)

    def remeasure(self, cfgs: list[SubnetConfig]) -> dict[str, dict[str, Any]]:
        """Time `cfgs` again in one session with interleaved repeats (a fair comparison on a busy
        machine). Empty when latency comes from a profile's model (nothing is measured here)."""
        if self.latency_model is not None or not cfgs:
            return {}
        from hwnas.hardware.measure import MeasureJob, measure_many

        jobs = []
        for cfg in cfgs:
            self.status(f"export {cfg.describe()}")
            ir, _ = self._ir(cfg)
            build = None
            if cfg.has_deploy_genes:
                from hwnas.hardware.quant_ir import quantized_model

                build = (lambda ir=ir, cfg=cfg: quantized_model(ir, cfg)[0])   # compressed when compiled
            jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), tuple(cfg.mlp_widths),
                                   cfg.n_params(self.supernet.config), properties=dict(cfg.runtime) or None,
                                   build=build))
        self.status(f"re-measuring {len(jobs)} subnets (interleaved)")
        from hwnas.hardware.measure import speedup

        ms = measure_many(jobs, self.target, host=self.host, seed=self.seed)
        full_key = self.supernet.space.largest().key
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
                rec["vs_full"] = {k: speedup(m, full, metric, seed=self.seed)
                                  for k, metric in (("tpot_speedup", "tpot_ms"), ("ttft_speedup", "ttft_ms"),
                                                    ("throughput_ratio", "throughput_tok_s"))}
            out[m.subnet_key] = rec
        return out

    # ------------------------------------------------------------------ the protocol
    def __call__(self, cfg: SubnetConfig) -> dict[str, Any]:
        self.status(f"accuracy {cfg.describe()}")
        out = self.accuracy(cfg)
        out.update(self.signal(cfg, out))
        out.update(self.latency(cfg))
        return out

    def report(self, suite: Any) -> Callable[[SubnetConfig], dict[str, Any]]:
        """A `report(cfg)` callable for run_search: paired accuracy on another split (select / holdout)."""

        def report(cfg: SubnetConfig) -> dict[str, Any]:
            self.status(f"{suite.split} split {cfg.describe()}")
            return self.accuracy(cfg, suite)

        return report
