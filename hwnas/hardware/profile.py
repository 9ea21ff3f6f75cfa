"""`hwnas profile`: measure subnets on this CPU under a target and fit the latency model.

`run_profile` exports (cached by subnet key) and then measures, with repeats interleaved across models,
- **whole subnets**: the full model, the smallest subnet and `samples - 1` random ones spread over
  the allowed layer counts (half with one width for every layer, half with mixed widths), and
- optionally **probes** (`probe_layers` = k > 0): k layers of each allowed MLP width plus a 1-layer
  model, extra rows for the latency model's per-layer table,
fits the latency model (latency_model.py) with its leave-one-out error on whole subnets, and
writes ``profile.json`` (target, host, every measurement, latency-model parameters and error,
Kendall's tau of parameter count vs measured TPOT) atomically into `out_dir`.

A profile records its host's fingerprint in every measurement. `load_profile` refuses a file whose
measurements come from different hosts, and, when asked with `expect_host`, one made on another host.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.errors import MeasurementError
from hwnas.hardware.host import HostInfo
from hwnas.hardware.latency_model import (
    LatencyModel,
    fit_latency_model,
    mape,
    measurement_metrics,
    measurement_noise,
)
from hwnas.hardware.measure import Measurement
from hwnas.hardware.targets import Target

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROFILE_FILE = "profile.json"
DEFAULT_SAMPLES = 12
MAX_VARIANTS = 12   # --quant auto: format/runtime variants measured besides the architectures (cold time)
DEFAULT_PROBE_LAYERS = 0  # no probes: the table is fit on whole subnets (see latency_model.py)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Profile:
    target: Target
    host: HostInfo
    model: dict[str, Any]
    space: dict[str, Any]
    measurements: tuple[Measurement, ...]   # whole subnets (the full model first)
    probes: tuple[Measurement, ...]
    latency_model: LatencyModel
    ranking: dict[str, Any]
    seed: int = 0
    samples: int = DEFAULT_SAMPLES
    probe_layers: int = DEFAULT_PROBE_LAYERS
    host_note: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    holdout: tuple[Measurement, ...] = ()  # measured in the same session, never fit on (error check only)
    # `hwnas profile --quant auto`: format/runtime variants of the measured architectures and the gene-aware model
    variants: tuple[Measurement, ...] = ()
    gene_model: Any = None
    schema_version: int = SCHEMA_VERSION

    @property
    def host_matches_target(self) -> bool:
        return self.target.cpu_matches(self.host.cpu_model)

    def check_host(self, host: HostInfo | str) -> None:
        """Raise MeasurementError if `host` (or a fingerprint) is not the host this profile was made on."""
        from hwnas.hardware.host import check_same_host

        fp = host if isinstance(host, str) else host.fingerprint
        check_same_host(self.host.fingerprint, fp, "this profile")

    def add_measurements(self, new: Sequence[Measurement]) -> "Profile":
        """A copy with more whole-subnet measurements; refuses ones from another host or target."""
        import dataclasses

        for m in new:
            if m.host_fingerprint != self.host.fingerprint:
                raise MeasurementError(
                    f"measurement of {m.subnet_key} comes from host {m.host_fingerprint}, this profile from "
                    f"{self.host.fingerprint}; profiles from different hosts are never mixed"
                )
            if m.target != self.target.name:
                raise MeasurementError(f"measurement of {m.subnet_key} is for target {m.target!r}, this profile for {self.target.name!r}")
        return dataclasses.replace(self, measurements=self.measurements + tuple(new))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "target": self.target.to_dict(),
            "host": self.host.to_dict(),
            "host_matches_target": self.host_matches_target,
            "host_note": self.host_note,
            "model": self.model,
            "space": self.space,
            "seed": self.seed,
            "samples": self.samples,
            "probe_layers": self.probe_layers,
            "ranking": self.ranking,
            "latency_model": self.latency_model.to_dict(),
            **({"gene_latency_model": self.gene_model.to_dict(), "variants": [m.to_dict() for m in self.variants]}
               if self.gene_model is not None else {}),
            "measurements": [m.to_dict() for m in self.measurements],
            "probes": [m.to_dict() for m in self.probes],
            "holdout": [m.to_dict() for m in self.holdout],
            "timings_s": self.timings_s,
            "versions": self.versions,
            # the interleaved session (rounds, rounds set aside for interference, host load): derived, not read back
            "measurement_session": ({k: v for k, v in self.measurements[0].session.items() if k != "reference"}
                                    if self.measurements else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Profile":
        if not isinstance(d, dict) or d.get("schema_version") != SCHEMA_VERSION:
            raise MeasurementError(f"not an hwnas profile of schema_version {SCHEMA_VERSION}")
        try:
            return cls(
                target=Target.from_dict(d["target"], source="profile target"),
                host=HostInfo.from_dict(d["host"]),
                model=dict(d["model"]), space=dict(d["space"]),
                measurements=tuple(Measurement.from_dict(m) for m in d["measurements"]),
                probes=tuple(Measurement.from_dict(m) for m in d.get("probes", [])),
                holdout=tuple(Measurement.from_dict(m) for m in d.get("holdout", [])),
                latency_model=LatencyModel.from_dict(d["latency_model"]),
                ranking=dict(d.get("ranking", {})), seed=int(d.get("seed", 0)), samples=int(d.get("samples", 0)),
                probe_layers=int(d.get("probe_layers", DEFAULT_PROBE_LAYERS)), host_note=d.get("host_note", ""),
                timings_s=dict(d.get("timings_s", {})), versions=dict(d.get("versions", {})), created=d.get("created", ""),
                variants=tuple(Measurement.from_dict(m) for m in d.get("variants", [])),
                gene_model=_gene_model(d.get("gene_latency_model")),
            )
        except KeyError as e:
            raise MeasurementError(f"profile lacks the field {e.args[0]!r}") from None


def _gene_model(d: Any) -> Any:
    if not d:
        return None
    from hwnas.hardware.gene_latency import GeneLatencyModel

    return GeneLatencyModel.from_dict(d)


def load_profile(path: str | os.PathLike[str], expect_host: HostInfo | str | None = None) -> Profile:
    """Read profile.json (or a folder holding one). Every measurement must come from the profile's host;
    with `expect_host`, the profile must also have been made on that host (use it before adding
    new measurements, so hosts are never mixed)."""
    import json

    p = Path(path)
    if p.is_dir():
        p = p / PROFILE_FILE
    if not p.is_file():
        raise MeasurementError(f"profile {path} not found; run `hwnas profile --target NAME --out DIR` first")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MeasurementError(f"cannot read profile {p}: {e}") from None
    prof = Profile.from_dict(d)
    fp = prof.host.fingerprint
    other = sorted({m.host_fingerprint for m in prof.measurements + prof.probes + prof.holdout} - {fp})
    if other:
        raise MeasurementError(f"profile {p} mixes measurements from hosts {[fp] + other}; re-profile on one host")
    if prof.latency_model.host_fingerprint and prof.latency_model.host_fingerprint != fp:
        raise MeasurementError(f"profile {p}: latency model was fit on host {prof.latency_model.host_fingerprint}, measurements on {fp}")
    if expect_host is not None:
        prof.check_host(expect_host)
    return prof


# ---------------------------------------------------------------------------- choosing what to measure
def choose_subnets(space: Any, samples: int, rng: np.random.Generator) -> list[Any]:
    """Full model, smallest subnet, then samples-1 random ones spread evenly over the layer counts.

    Even-numbered random subnets get one width for every layer (so widths span their whole
    range), odd ones a random width per layer.
    """
    from hwnas.model.space import SubnetConfig

    if samples < 1:
        raise MeasurementError(f"--samples must be >= 1, got {samples}")
    chosen = [space.largest(), space.smallest()]
    counts = np.linspace(space.min_layers, space.max_layers, samples - 1) if samples > 1 else []
    for i, k in enumerate(counts):
        k = int(round(k))
        cfg = None
        for _ in range(1000):
            c = space.sample(rng)
            if len(c.layers) == k:
                cfg = c
                break
        cfg = cfg or space.sample(rng)
        if i % 2 == 0:
            cfg = SubnetConfig(cfg.layers, (int(rng.choice(space.widths)),) * len(cfg.layers))
        if cfg.key in {c.key for c in chosen}:
            cfg = space.sample(rng)
        chosen.append(cfg)
    seen, out = set(), []
    for c in chosen:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def probe_configs(widths: Sequence[int], layers: int = DEFAULT_PROBE_LAYERS) -> list[Any]:
    """k layers at each width, plus one 1-layer probe at the smallest width (separates the base cost);
    none when `layers` is 0."""
    from hwnas.model.space import SubnetConfig

    if layers == 0:
        return []
    if layers < 2:
        raise MeasurementError(f"probe layers must be >= 2 to separate per-layer from fixed cost, got {layers}")
    ws = sorted(set(widths))
    out = [SubnetConfig((0,), (ws[0],))]
    out += [SubnetConfig(tuple(range(layers)), (w,) * layers) for w in ws]
    return out


# ---------------------------------------------------------------------------- orchestration
def _as_supernet(loaded_or_supernet: Any, space: Any) -> tuple[Any, dict[str, Any]]:
    from hwnas.model.supernet import Supernet

    if isinstance(loaded_or_supernet, Supernet):
        sn = loaded_or_supernet
        if space is not None:
            sn.space = space
        return sn, {"name": sn.space.base_model or "model"}
    loaded = loaded_or_supernet
    if getattr(loaded, "subnet", None) is not None:
        raise MeasurementError(
            f"{loaded.source.spec} is an extracted subnet ({loaded.subnet.describe()}); profile the full model it came from"
        )
    sn = Supernet.from_loaded(loaded, order=False, space=space)  # channel order does not change speed
    info = dict(loaded.source.to_dict())
    from hwnas.model.source_grid import lossless_formats

    info["lossless_formats"] = list(lossless_formats(loaded.source))  # the source's own grid (a GGUF's Q4_1)
    try:
        info["sha256"] = loaded.source.sha256()
    except Exception as e:  # noqa: BLE001 - provenance only
        log.debug("cannot hash model: %s", e)
    return sn, info


def run_profile(
    loaded_or_supernet: Any,
    target: Target | str,
    space: Any = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    *,
    probe_layers: int = DEFAULT_PROBE_LAYERS,
    form: str = "linear",
    host: HostInfo | None = None,
    force: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    holdout: int = 0,
    quant: str = "int8",
) -> Profile:
    """Export, measure and fit; write `out_dir`/profile.json atomically when `out_dir` is given.

    holdout: that many more random subnets are measured in the same session but never fit on; the
    latency model's error on them is reported next to their measurements' own intervals
    (``latency_model.error["holdout"]``).

    quant="auto": the measured architectures are also measured in a designed set of weight-format /
    runtime variants (`gene_latency.design_variants`; integer IRs compressed in memory from the
    architectures' float IRs, runtime settings over the target's properties) in the same
    interleaved session, and a gene-aware model (`Profile.gene_model`) is fit on them with its
    leave-one-out error per gene value."""
    from hwnas.hardware.host import detect_host
    from hwnas.hardware.irexport import export_ir_cached, model_fingerprint, tool_versions
    from hwnas.hardware.measure import MeasureJob, measure_many
    from hwnas.hardware.targets import load_target
    from hwnas.io import check_writable_dir_target

    t_start = time.perf_counter()
    target = load_target(target)
    if samples < 1:
        raise MeasurementError(f"--samples must be >= 1, got {samples}")
    if out_dir is not None:
        check_writable_dir_target(out_dir, force=force)  # fail before an expensive run
    sn, model_info = _as_supernet(loaded_or_supernet, space)
    space = sn.space
    host = host or detect_host()
    host_note = ""
    if not target.cpu_matches(host.cpu_model):
        host_note = (f"target {target.name!r} describes {' / '.join(target.expected_cpu)} CPUs, but this host is "
                     f"{host.cpu_model!r}: every number here was measured on {host.cpu_model}")
        log.warning("%s", host_note)
    rng = np.random.default_rng(seed)
    subnets = choose_subnets(space, samples, rng)
    if holdout < 0:
        raise MeasurementError(f"--holdout must be >= 0, got {holdout}")
    held = []
    if holdout:
        seen = {c.key for c in subnets}
        pool = choose_subnets(space, holdout + 4, np.random.default_rng(seed + 1000))[2:]
        held = [c for c in pool if c.key not in seen][:holdout]
    probes = probe_configs(space.widths, probe_layers)
    sn.reset()
    model_id = (model_info.get("sha256") or model_fingerprint(sn.model))[:12]
    items = [("probe", c) for c in probes] + [("subnet", c) for c in subnets] + [("holdout", c) for c in held]
    # Progress: one step per export, then measure_many's own steps (compiles + generations).
    n_export = len(items)
    state = {"measure_total": 0}

    def report(done: int, total: int, label: str) -> None:
        if progress:
            state["measure_total"] = total
            progress(n_export + done, n_export + total, label)

    jobs = []
    t0 = time.perf_counter()
    n_exported = 0
    irs: dict[str, Any] = {}
    for i, (kind, cfg) in enumerate(items):
        if progress:
            progress(i, n_export + 1, f"export {kind} {cfg.key} ({cfg.describe()})")
        ir, fresh = export_ir_cached(key=f"{model_id}-{cfg.key}", build=lambda: sn.extract(cfg), cache_dir=cache_dir)
        irs[cfg.key] = ir
        n_exported += int(fresh)
        jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), cfg.mlp_widths, cfg.n_params(sn.config), kind))
    gene_space = None
    if quant == "auto":
        from hwnas.hardware.gene_latency import design_variants
        from hwnas.hardware.quant_ir import quantized_model
        from hwnas.model.deploy_space import DeploySpace

        hidden, heads = int(sn.config.hidden_size), int(sn.config.num_attention_heads)
        attn_in = (hidden, heads * int(getattr(sn.config, "head_dim", None) or hidden // heads))
        gene_space = space if space.deploy is not None else space.with_(
            deploy=DeploySpace.default(attn_in + space.widths, has_bf16=host.has_bf16,
                                       source_formats=model_info.get("lossless_formats", ())))
        for cfg in design_variants(gene_space, subnets, np.random.default_rng(seed + 7), max_variants=MAX_VARIANTS):
            ir = irs[cfg.architecture().key]
            jobs.append(MeasureJob(str(ir), cfg.key, cfg.to_dict(), cfg.mlp_widths, cfg.n_params(sn.config), "variant",
                                   properties=dict(cfg.runtime) or None,
                                   build=lambda ir=ir, cfg=cfg: quantized_model(ir, cfg)[0]))
    t1 = time.perf_counter()
    measured = measure_many(jobs, target, host=host, seed=seed, progress=report)
    t2 = time.perf_counter()
    results: dict[str, list[Measurement]] = {"probe": [], "subnet": [], "holdout": [], "variant": []}
    for m in measured:
        results[m.kind].append(m)
        log.info("%s %s: TTFT %.2f ms, TPOT %.2f ms, %.1f tok/s @%d", m.kind, m.subnet_key, m.ttft_ms, m.tpot_ms,
                 m.throughput_tok_s, m.throughput_batch_size)
    lm = fit_latency_model(
        [(m.mlp_widths, measurement_metrics(m)) for m in results["subnet"]],
        space.widths, target.workload.batch_sizes,
        probes=[(m.mlp_widths, measurement_metrics(m)) for m in results["probe"]],
        form=form, target=target.name, host_fingerprint=host.fingerprint,
        noise=[measurement_noise(m) for m in results["subnet"]],
    )
    if results["holdout"]:
        lm.error["holdout"] = holdout_error(lm, results["holdout"])
    gene_model = None
    if gene_space is not None:
        from hwnas.hardware.gene_latency import fit_gene_latency_model

        gene_model = fit_gene_latency_model([(m.subnet, measurement_metrics(m)) for m in results["variant"]],
                                            gene_space.deploy, target.workload.batch_sizes, target=target.name,
                                            host_fingerprint=host.fingerprint)
    t_export, t_measure, total = t1 - t0, t2 - t1, len(items)
    ranking = rank_agreement(results["subnet"], lm)
    prof = Profile(
        target=target, host=host,
        model={**model_info, "num_layers": space.num_layers, "full_width": space.full_width,
               "hidden_size": int(sn.config.hidden_size), "model_id": model_id},
        space=space.to_dict(), measurements=tuple(results["subnet"]), probes=tuple(results["probe"]),
        holdout=tuple(results["holdout"]),
        latency_model=lm, ranking=ranking, seed=seed, samples=samples, probe_layers=probe_layers, host_note=host_note,
        timings_s={"total": round(time.perf_counter() - t_start, 1), "export": round(t_export, 1),
                   "measure": round(t_measure, 1), "irs_exported": n_exported, "irs_from_cache": total - n_exported},
        versions=tool_versions(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        variants=tuple(results["variant"]), gene_model=gene_model,
    )
    if out_dir is not None:
        write_profile(prof, out_dir, force=force)
    return prof


def holdout_error(lm: LatencyModel, held: Sequence[Measurement]) -> dict[str, Any]:
    """The latency model on subnets it was never fit on, next to those measurements' own 95% intervals."""
    from hwnas.hardware.latency_model import noise_split

    pred = [lm.predict(m.mlp_widths) for m in held]
    out: dict[str, Any] = {"method": "subnets measured in the same session, never fit on", "n_subnets": len(held),
                           "subnets": [m.subnet_key for m in held]}
    for name in ("ttft_ms", "tpot_ms"):
        meas = [getattr(m, name) for m in held]
        p = [x[name] for x in pred]
        noise = [measurement_noise(m).get(f"{name}@{m.latency_batch_size}", float("nan")) for m in held]
        out[f"{name}_mape_pct"] = round(mape(meas, p), 3)
        out[f"{name}_predicted"] = [round(x, 4) for x in p]
        if not any(np.isnan(noise)):
            out[f"{name}_noise_split"] = noise_split(meas, p, noise)
    return out


def write_profile(prof: Profile, out_dir: str | os.PathLike[str], force: bool = False) -> Path:
    from hwnas.io import atomic_dir, write_json_atomic

    with atomic_dir(out_dir, force=force) as tmp:
        write_json_atomic(tmp / PROFILE_FILE, prof.to_dict())
    return Path(out_dir) / PROFILE_FILE


def rank_agreement(measurements: Sequence[Measurement], lm: LatencyModel | None = None) -> dict[str, Any]:
    """Kendall's tau between parameter count and measured latency (and the latency model's CV predictions)."""
    from scipy.stats import kendalltau

    out: dict[str, Any] = {"n_subnets": len(measurements)}
    if len(measurements) < 3:
        out["note"] = "fewer than 3 subnets: no ranking statistics"
        return out
    params = [m.n_params for m in measurements]
    for name in ("tpot_ms", "ttft_ms"):
        y = [getattr(m, name) for m in measurements]
        tau, p = kendalltau(params, y)
        out[f"kendall_tau_params_vs_{name}"] = None if np.isnan(tau) else round(float(tau), 4)
        out[f"p_value_params_vs_{name}"] = None if np.isnan(p) else float(p)
    if lm is not None and "cv_predictions" in lm.error:
        lat = lm.batch_sizes[0]
        pairs = [(p, m.tpot_ms) for p, m in zip(lm.error["cv_predictions"][f"tpot_ms@{lat}"], measurements)
                 if p is not None]
        if len(pairs) >= 3:
            tau, _ = kendalltau([p for p, _ in pairs], [y for _, y in pairs])
            out["kendall_tau_latency_model_vs_tpot_ms"] = None if np.isnan(tau) else round(float(tau), 4)
    return out
