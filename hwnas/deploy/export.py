"""Building a bundle: A bundle is a folder in optimum-intel's layout (``openvino_model.xml/.bin`` stateful with KV
cache, ``config.json``, ``generation_config.json``, tokenizer files, ``openvino_tokenizer.xml`` /
``openvino_detokenizer.xml``), so ``openvino_genai.LLMPipeline(dir, "CPU")`` and
``optimum.intel.OVModelForCausalLM.from_pretrained(dir)`` load it as is, and
``hwnas_manifest.json`` (`BundleManifest`): subnet, source-model hash, supernet provenance,
quantization recipe with its calibration hash, target and host fingerprint, measured speed,
report-split accuracy, the sha256 of every other file, tool versions, and a greedy-generation
smoke record. The manifest carries a digest of its own canonical JSON, so a hand edit is
detected (integrity, not authenticity: anyone can recompute it).

`export_bundle` builds one in a temporary folder moved into place when complete (optionally also
``OUT.tar.gz``); `verify_bundle` checks a folder or archive (archives with absolute or ``..``
paths, links or devices are refused before anything is extracted).

Pipeline: extract the subnet (dense torch) -> INC quantization (`hwnas.deploy.quantize`) -> float model
with the dequantized weights -> optimum-intel export (`hwnas.hardware.irexport`) -> integer weights swapped
into the IR (`hwnas.hardware.ov_compress`) -> save without f16 compression.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hwnas.deploy.archive import checksum_files, write_archive
from hwnas.deploy.ir_accuracy import ir_accuracy
from hwnas.deploy.manifest import (
    IR_BIN,
    IR_XML,
    SMOKE_PROMPT,
    BundleManifest,
    Progress,
    tool_versions,
)
from hwnas.deploy.quantize import QuantRecipe
from hwnas.deploy.runtime import greedy_tokens
from hwnas.deploy.verify import current_host, measure_bundle
from hwnas.errors import DataError, OutputError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- building

@dataclass
class BundleResult:
    path: Path
    manifest: BundleManifest
    archive: Path | None = None

    @property
    def nbytes(self) -> int:
        return sum(e.bytes for e in self.manifest.file_entries().values())


def check_export_inputs(out: str | Path, *, force: bool = False, archive: bool = False,
                        calibration: str | Path | None = None) -> None:
    """Input checks that must fail before any work (nothing is written)."""
    from hwnas.io import check_writable_dir_target

    check_writable_dir_target(out, force=force)
    if archive:
        a = archive_path(out)
        if a.exists() and not force:
            raise OutputError(f"archive {a} already exists; choose another --out or pass --force")
    if calibration is not None and not Path(calibration).exists():
        raise DataError(f"calibration file {calibration} not found; give a .jsonl/.json/.txt file or a folder of them")


def archive_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".tar.gz")


class _Laps:
    """Wall seconds of each export step, so that a user (and the demo bench) sees where an export's time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self._t, 1)
        self._t = now


@dataclass
class _Source:
    """What the build steps share: the loaded model, the dense subnet, its references and calibration."""

    loaded: Any
    dense: Any
    supernet_meta: dict | None
    subnet: Any
    recipe: QuantRecipe
    plan: Any = None            # per-layer formats (hwnas.deploy.mixed) when the subnet carries weight_formats
    reference: Any = None       # (TaskSuite, full model's items) for the paired holdout accuracy
    skipped: dict = field(default_factory=dict)  # task -> why neither model is scored on it (chance known before)
    laps: "_Laps | None" = None   # wall seconds per step, for the manifest
    gen_ref: Any = None         # the full model's reference generations
    calib: Any = None
    owned: bool = False         # loaded by this call (its torch weights may be released once traced)


@dataclass
class _Runtime:
    """Where and how the bundle runs: target with the subnet's runtime genes, host, numerics of the checks."""

    base_target: Any            # the target profile as given (recorded in the manifest)
    target: Any                 # with the genes over its properties (what everything runs under)
    host: Any
    numerics: dict
    record: dict | None


def export_bundle(
    model: str | Any,
    out: str | Path,
    *,
    recipe: QuantRecipe,
    subnet: Any = None,
    layers: int | None = None,
    mlp_width: int | None = None,
    target: str | Any = "xeon",
    calibration: str | Path | None = None,
    calib_samples: int = 32,
    calib_seq_len: int = 256,
    seed: int = 0,
    force: bool = False,
    archive: bool = False,
    measure: bool = True,
    accuracy_tasks: Sequence[str] | None = None,
    accuracy_limit: int | None = None,
    data_dir: str | Path | None = None,
    search: dict | None = None,
    order_channels: bool = True,
    recovery: bool = True,
    accuracy_split: str = "holdout",
    progress: Progress | None = None,
    generation_check: bool = True,
    allow_degenerate: bool = False,
    generation_thresholds: Any = None,
    heal: str | Path | None = None,
    precheck: bool = False,
    skip_tasks: Mapping[str, str] | None = None,
) -> BundleResult:
    """Quantize `subnet` of `model` with `recipe` and write the bundle to `out`.

    model: a --model spec ("default", folder, .gguf) or a LoadedModel. subnet: SubnetConfig, or
    `layers` [+ `mlp_width`] (first N layers, one width; default full), or neither (the model as loaded).
    A subnet's deployment genes decide what `recipe` would: `weight_formats` quantize each layer in its
    own format (`hwnas.deploy.mixed`), `head_format` the embeddings/lm_head, `runtime` the OpenVINO
    properties everything below runs with and the manifest records (`hwnas.deploy.settings`).
    recovery: refit the subnet's down_proj weights to the full model first (hwnas.model.recovery).
    accuracy_tasks: tasks scored on the final IR on `accuracy_split` (default the holdout split, which
    took no part in choosing the subnet), paired with the full model on the same items (None: skip).
    measure: measure TTFT/TPOT/throughput with hwnas.hardware.measure on this host (skipped with a warning
    when the module is unavailable). Raises HwnasError subclasses; `out` is untouched on failure.
    generation_check: score the bundle's greedy generations against the full model
    (`hwnas.deploy.gencheck`) into the manifest; a failing bundle raises DegenerateGenerationError
    (nothing written) unless `allow_degenerate`. generation_thresholds: a GenThresholds (default: calibrated).
    precheck: with the generation check, first check a subnet with weight formats in PyTorch (its weights
    fake-quantized, `hwnas.deploy.gencheck.precheck_fake_quantized`): a fail raises before anything is
    quantized or exported. It pays only where building the quantized IR costs more than a PyTorch
    generation pass (on the default model it does not: ~50 s against ~20 s for the IR and ~19 s for its
    check, bench/precheck_cost.py), so the CLI does not use it.
    heal: a `hwnas heal` folder whose trained tensors replace the subnet's (its subnet when none is given).
    skip_tasks: accuracy tasks known beforehand to support no claim, with why (the search's full model was
    not above chance on them): neither model is scored on them, and the manifest names them. Ignored when
    it would leave no task.
    """
    from hwnas.hardware.targets import load_target
    from hwnas.io import atomic_dir

    tick = progress or (lambda done, total, label="": None)
    recipe.check()
    check_export_inputs(out, force=force, archive=archive, calibration=calibration)
    tgt = load_target(target)
    steps = 7
    tick(0, steps, "loading model")
    laps = _Laps()
    src = _prepare_source(model, recipe, subnet=subnet, layers=layers, mlp_width=mlp_width, heal=heal,
                          order_channels=order_channels, recovery=recovery, generation_check=generation_check)
    src.owned = isinstance(model, (str, Path))
    src.laps = laps
    laps.mark("load")
    if precheck and generation_check and not allow_degenerate and src.subnet is not None \
            and src.subnet.weight_formats is not None:
        from hwnas.deploy.gencheck import precheck_fake_quantized

        tick(0, steps, "generation pre-check (fake-quantized weights, PyTorch)")
        precheck_fake_quantized(src.dense, src.subnet, src.gen_ref, thresholds=generation_thresholds,
                                what=f"subnet {src.subnet.key}")
        laps.mark("precheck")
    if accuracy_tasks:  # before quantizing: the dense subnet shares tensors with the full model
        tick(0, steps, f"full model on the {accuracy_split} split (cached per item)")
        scored, src.skipped = _holdout_tasks(accuracy_tasks, skip_tasks or {})
        src.reference = _full_reference(src.loaded, scored, accuracy_split, accuracy_limit, data_dir, seed)
        src.laps.mark("full_model_holdout")
    _load_calibration(src, calibration, calib_samples, calib_seq_len, seed)
    tick(1, steps, f"quantizing ({src.recipe.describe() if src.plan else src.recipe.name})")
    result = _quantize(src)
    src.laps.mark("quantize")
    run = _runtime(tgt, src.subnet)
    out = Path(out)
    opts = _Checks(generation_check, generation_thresholds, allow_degenerate, measure, accuracy_split, search, seed)
    with atomic_dir(out, force=force) as tmp:
        manifest = _build_into(tmp, out.name, src, result, run, opts, tick, steps)
    tick(7, steps, "done")
    arch = write_archive(out, archive_path(out), force=force) if archive else None
    log.info("bundle %s written (%s)", out, manifest.recipe.describe())
    return BundleResult(path=out, manifest=manifest, archive=arch)


@dataclass
class _Checks:
    generation_check: bool
    thresholds: Any
    allow_degenerate: bool
    measure: bool
    accuracy_split: str
    search: dict | None
    seed: int


def _build_into(tmp: Path, name: str, src: _Source, result: Any, run: _Runtime, opts: _Checks, tick: Any,
                steps: int) -> BundleManifest:
    """IR with integer weights, smoke and generation checks, speed, paired accuracy, manifest: all in `tmp`."""
    tick(2, steps, "exporting OpenVINO IR")
    if result is None:  # RTN: trace the untouched model, then compute the codes (see `_quantize`)
        from hwnas.deploy.quantize import quantize_model

        # After tracing, the torch weights are dead weight unless the generation check scores NLL with
        # the full model: a model this call loaded itself is released before the IR is compressed.
        keep = not src.owned or (opts.generation_check and src.subnet is None)
        dense = src.dense
        summary, result = _write_ir(dense, src.loaded.tokenizer, None, tmp,
                                    release=None if keep else _releaser(src.loaded, dense),
                                    quantize=lambda: quantize_model(dense, src.recipe, src.calib, inplace=True))
    else:
        summary, result = _write_ir(materialize_result(result), src.loaded.tokenizer, result, tmp)
    src.laps.mark("ir")
    tick(3, steps, "smoke generation and generation check")
    smoke = _smoke(tmp, src.loaded.tokenizer, run.numerics)
    generation = None
    if opts.generation_check:
        generation = _generation(tmp, src, run, opts.thresholds, opts.allow_degenerate)
    src.laps.mark("generation_check")
    measurement = None
    if opts.measure:
        tick(4, steps, "measuring speed")
        measurement = _measure(tmp, run.target, name)
        src.laps.mark("measure")
    accuracy = None
    if src.reference is not None:
        tick(5, steps, f"scoring accuracy ({opts.accuracy_split} split, paired with the full model)")
        accuracy = _paired_ir_accuracy(tmp, src.loaded, src.reference, run.target.resolved_properties(run.host),
                                       skipped=src.skipped)
        src.laps.mark("accuracy")
    tick(6, steps, "checksums and manifest")
    return _manifest(tmp, name, src, result.recipe, run, opts.seed, ir=summary, measurement=measurement,
                     accuracy=accuracy, smoke=smoke, search=opts.search, generation=generation,
                     build_seconds=dict(src.laps.seconds))


def _prepare_source(model: Any, recipe: QuantRecipe, *, subnet: Any, layers: int | None, mlp_width: int | None,
                    heal: Any, order_channels: bool, recovery: bool, generation_check: bool) -> _Source:
    """Load the model and the dense subnet; the recipe the subnet's genes decide; the full model's generations."""
    if heal is not None and subnet is None and layers is None and mlp_width is None:
        from hwnas.model.healed import heal_subnet

        subnet = heal_subnet(heal)
    loaded, dense, meta, subnet = _load_dense(model, subnet, order_channels, layers, mlp_width,
                                              recovery=recovery, heal=heal)
    plan = None
    if subnet is not None and subnet.head_format is not None:
        recipe = dataclasses.replace(recipe, head=subnet.head_format)
    if subnet is not None and subnet.weight_formats is not None:
        from hwnas.deploy.mixed import layer_plan, mixed_recipe

        plan = layer_plan(subnet, dense)
        recipe = mixed_recipe(plan, recipe.head)
    src = _Source(loaded=loaded, dense=dense, supernet_meta=meta, subnet=subnet, recipe=recipe, plan=plan)
    if generation_check:  # before quantization: in-place quantization of a subnet can touch shared weights
        from hwnas.deploy.gencheck import prepare_reference

        src.gen_ref = prepare_reference(loaded)
    return src


def _load_calibration(src: _Source, calibration: Any, n: int, seq_len: int, seed: int) -> None:
    if src.recipe.needs_calibration:
        from hwnas.deploy.quantize import load_calibration

        src.calib = load_calibration(src.loaded.tokenizer, calibration, n_samples=n, seq_len=seq_len, seed=seed)


def _quantize(src: _Source) -> Any:
    """INC quantization: one recipe for every layer, or each layer in its gene's format."""
    from hwnas.deploy.quantize import quantize_model

    inplace = src.dense is not src.loaded.model
    if src.plan is not None:
        from hwnas.deploy.mixed import quantize_mixed

        return quantize_mixed(src.dense, src.plan, src.recipe.head, src.calib, inplace=inplace)
    if src.recipe.algorithm in ("rtn", "none"):
        # RTN leaves the model untouched: its float weights are traced as placeholders that `compress_ir`
        # replaces by the integer ones, so no dequantized float32 copy is made, and the codes are computed
        # after the trace (the trace's graph and the codes are never in memory together; `_build_into`).
        # GPTQ/AWQ change weights (AWQ folds scales into the norms): their dequantized model is traced.
        from hwnas.deploy.quantize import resolve_group_size

        src.recipe = resolve_group_size(src.recipe, src.dense)  # a bad group size fails before the trace
        return None
    return quantize_model(src.dense, src.recipe, src.calib, inplace=inplace)


def materialize_result(result: Any) -> Any:
    """The float torch model with the dequantized weights that is exported before the integers go in."""
    from hwnas.deploy.quantize import materialize

    return materialize(result)


def _runtime(target: Any, subnet: Any) -> _Runtime:
    from hwnas.deploy.settings import numeric_properties, runtime_record, with_genes

    genes = dict(subnet.runtime) if subnet is not None else {}
    host = _host_obj()
    return _Runtime(base_target=target, target=with_genes(target, genes), host=host, numerics=numeric_properties(genes, host),
                    record=runtime_record(genes, target, host))


def _smoke(folder: Path, tokenizer: Any, properties: dict) -> dict:
    """Greedy tokens of the smoke prompt (verify reproduces them with the same numerics)."""
    prompt_ids = [int(i) for i in tokenizer(SMOKE_PROMPT, add_special_tokens=False)["input_ids"]][:32] or [0]
    return {"prompt": SMOKE_PROMPT, "prompt_ids": prompt_ids,
            "tokens": greedy_tokens(folder, prompt_ids, properties=properties), "properties": dict(properties)}


def _generation(folder: Path, src: _Source, run: _Runtime, thresholds: Any, allow_degenerate: bool) -> dict:
    from hwnas.deploy.gencheck import check_built_bundle

    what = f"subnet {src.subnet.key}" if src.subnet is not None else "the whole model"
    # NLL only where the full model is certainly intact (whole-model export quantizes a copy);
    # bench/genquality_calibration.py measured an absurd NLL after a subnet's in-place quantization
    return check_built_bundle(folder, src.loaded, thresholds=thresholds, allow_degenerate=allow_degenerate, what=what,
                              reference=src.gen_ref, nll_model=src.subnet is None, properties=run.numerics)


def _measure(folder: Path, target: Any, name: str) -> dict | None:
    try:
        return measure_bundle(folder, target, name=name)
    except ImportError:
        log.warning("hwnas.hardware.measure is not available; the manifest holds no speed measurement")
        return None


def _manifest(folder: Path, name: str, src: _Source, recipe: QuantRecipe, run: _Runtime, seed: int,
              **records: Any) -> BundleManifest:
    """Checksum every file and write the manifest into `folder`."""
    subnet = src.subnet
    manifest = BundleManifest(
        name=name,
        model=_model_record(src.loaded),
        subnet=dict(subnet.to_dict(), key=subnet.key) if subnet is not None else None,
        supernet=src.supernet_meta,
        quantization=recipe.to_dict(),
        calibration_sha256=recipe.calibration.sha256 if recipe.calibration else None,
        target=run.base_target.to_dict(),
        host=current_host(),
        runtime=run.record,
        files=checksum_files(folder),
        tool_versions=tool_versions(),
        seed=seed,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **records,
    )
    manifest.write(folder)
    return manifest


def _host_obj():
    try:
        from hwnas.hardware.host import detect_host

        return detect_host(measure_bandwidth=False)
    except ImportError:  # pragma: no cover
        return None


def _holdout_tasks(tasks: Sequence[str], skip: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(the task specs to score, {task name: why} of those left out): `skip` names tasks (a task file's name
    is its stem); skipping every task would leave no figure, so then none is skipped."""
    from hwnas.accuracy.tasks import get_task

    names = {t: get_task(t).name for t in tasks}
    left = {names[t]: skip[names[t]] for t in tasks if names[t] in skip}
    if len(left) == len(set(names.values())):
        return list(tasks), {}
    return [t for t in tasks if names[t] not in left], left


def _full_reference(loaded: Any, tasks: Sequence[str], split: str, limit: int | None, data_dir: Any,
                    seed: int) -> tuple[Any, dict]:
    """(TaskSuite, the full float model's per-item results on it), cached per item."""
    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.paired import full_model_items

    suite = TaskSuite(loaded.tokenizer, list(tasks), split=split, limit=limit, data_dir=data_dir, seed=seed)
    return suite, full_model_items(suite, loaded.model, loaded.source.content_sha256()[:16])


def _paired_ir_accuracy(folder: Path, loaded: Any, reference: tuple[Any, dict], properties: dict, *,
                        skipped: Mapping[str, str] | None = None) -> dict:
    """Accuracy of the bundle's IR on the reference suite, and its paired difference from the full
    (float) model on the same items: what a user gives up, quantization included. `skipped`: tasks
    left out before any scoring (task -> why), named with the ones left out here."""
    from hwnas.accuracy.chance import chance_tests, scored_tasks
    from hwnas.accuracy.paired import compare_items, comparison_verdict

    suite, full = reference
    # Tasks where the full model is not above chance (on these items) support no claim and are left out of
    # the verdict: the bundle is not scored on them (MMLU on the default model: a third of the export's time).
    tests = chance_tests(full, "acc_norm")
    scored, unscored = scored_tasks(list(suite.data), tests)
    # The context is read back from the KV cache, as generation reads a prompt, so the bundle is scored as it
    # runs (a u8 KV cache acts on the figure; one prefill per choice never read the cache back), and
    # each item's context is computed once instead of once per choice.
    acc = ir_accuracy(folder, loaded.tokenizer, suite=suite.only(scored) if unscored else suite,
                      properties=properties, keep_items=True, context_in_cache=True)
    items = acc.pop("_items")
    acc["vs_full"] = {m: compare_items(items, {n: full[n] for n in items}, m) for m in ("acc_norm", "acc")}
    if unscored or skipped:
        acc["unscored_tasks"] = {**{n: tests[n].describe() + "; the bundle was not scored on it" for n in unscored},
                                 **dict(skipped or {})}
        left = set(unscored) | set(skipped or {})
        for cmp in acc["vs_full"].values():
            cmp["chance_tasks"] = [n for n in [*suite.data, *(skipped or {})] if n in set(cmp["chance_tasks"]) | left]
    acc["vs_full_basis"] = "bundle (OpenVINO IR) minus the full float model (PyTorch), same items"
    acc["scored_from"] = "context in the KV cache"  # holdouts before this field: one prefill per choice
    acc["verdict_1pt"] = comparison_verdict(acc["vs_full"]["acc_norm"], 1.0)  # names chance-level tasks
    return acc


def _load_dense(model: Any, subnet: Any, order_channels: bool, layers: int | None = None,
                mlp_width: int | None = None, *, recovery: bool = True,
                heal: str | Path | None = None) -> tuple[Any, Any, dict | None, Any]:
    """(LoadedModel, dense torch model of the subnet, supernet provenance, SubnetConfig or None).

    With `heal`, the heal folder's trained tensors replace the subnet's (they include every kept
    layer's down_proj, so the training-free refit is not repeated: the heal started from it)."""
    from hwnas.model.loading import LoadedModel, load_model
    from hwnas.model.supernet import Supernet, load_supernet, resolve_subnet_option

    whole = subnet is None and layers is None and mlp_width is None
    if whole and heal is not None:
        from hwnas.model.healed import HealError

        raise HealError("--heal needs a subnet: the whole model is not healed")
    if whole:
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        meta = {"subnet_of": loaded.subnet.to_dict()} if loaded.subnet is not None else None
        return loaded, loaded.model, meta or loaded.supernet_meta, None
    if isinstance(model, LoadedModel):
        loaded, sn = model, Supernet.from_loaded(model, order=order_channels)
    else:  # the ordered supernet is cached per model, as `hwnas search` / `hwnas extract` use it
        loaded, sn = load_supernet(model, order=order_channels)
    if subnet is None:
        subnet = resolve_subnet_option(None, layers, mlp_width, sn.full_width, space=sn.space)
    arch = subnet.architecture()  # what the supernet slices; the deployment genes are the export's
    sn.space.validate(arch, structure=False)
    if recovery and heal is None:
        from hwnas.model.recovery import make_recoverer

        sn.recoverer = make_recoverer(sn, loaded.tokenizer)
    dense = sn.extract(arch)
    meta = {k: v for k, v in sn.meta.items() if k not in ("channel_order", "layer_scores")}
    meta["channels_ordered"] = bool(sn.meta.get("channels_ordered", order_channels))
    meta["recovery"] = sn.recovery_record(arch)
    if heal is not None:
        from hwnas.model.healed import apply_heal, read_record

        meta["heal"] = apply_heal(dense, heal, subnet=arch, model_sha256=loaded.source.sha256())
        meta["recovery"] = read_record(heal).get("recovery")
    return loaded, dense, meta, subnet


def _model_record(loaded: Any) -> dict:
    src = loaded.source
    return {**src.to_dict(), "sha256": src.sha256()}


def _releaser(loaded: Any, qmodel: Any):
    """A function that frees the torch weights of the loaded model and the traced one (moved to meta)."""
    def release() -> None:
        import gc

        for m in {id(x): x for x in (qmodel, loaded.model) if x is not None}.values():
            m.to("meta")
        gc.collect()
    return release


def _write_ir(qmodel: Any, tokenizer: Any, result: Any, folder: Path, *, release: Any = None,
              quantize: Any = None) -> tuple[dict, Any]:
    """Export the model (the float model whose weights `compress_ir` replaces), swap in the integer
    weights, save into `folder` (no f16 pass). Returns (IR summary, QuantResult). Without `result`,
    `quantize()` makes it once the model is traced; `release` runs after that."""
    import gc

    import openvino as ov

    from hwnas.hardware.ov_compress import compress_ir
    from hwnas.hardware.irexport import export_ir

    stage = folder / ".stage"
    export_ir(qmodel, stage, tokenizer, force=True)
    if result is None:
        result = quantize()
    if release is not None:
        release()
    core = ov.Core()
    ov_model = core.read_model(str(stage / IR_XML))
    try:
        summary = compress_ir(ov_model, result.weights, head_f16=result.head_f16)
        ov_model.set_rt_info(json.dumps(result.recipe.to_dict()), ["hwnas", "quantization"])
        ov.save_model(ov_model, str(folder / IR_XML), compress_to_fp16=False)
    finally:
        del ov_model
        gc.collect()
    for p in stage.iterdir():
        if p.name not in (IR_XML, IR_BIN) and p.is_file():
            shutil.copy2(p, folder / p.name)
    shutil.rmtree(stage)
    return summary.to_dict(), result
