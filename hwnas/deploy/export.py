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

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hwnas.deploy.archive import checksum_files, write_archive
from hwnas.deploy.ir_accuracy import ir_accuracy
from hwnas.deploy.manifest import (
    EXACT_PROPERTIES,
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
) -> BundleResult:
    """Quantize `subnet` of `model` with `recipe` and write the bundle to `out`.

    model: a --model spec ("default", folder, .gguf) or a LoadedModel. subnet: SubnetConfig, or
    `layers` [+ `mlp_width`] (first N layers, one width; default full), or neither (the model as loaded).
    recovery: refit the subnet's down_proj weights to the full model first (hwnas.model.recovery).
    accuracy_tasks: tasks scored on the final IR on `accuracy_split` (default the holdout split, which
    took no part in choosing the subnet), paired with the full model on the same items (None: skip).
    measure: measure TTFT/TPOT/throughput with hwnas.hardware.measure on this host (skipped with a warning
    when the module is unavailable). Raises HwnasError subclasses; `out` is untouched on failure.
    generation_check: score the bundle's greedy generations against the full model
    (`hwnas.deploy.gencheck`) into the manifest; a failing bundle raises DegenerateGenerationError
    (nothing written) unless `allow_degenerate`. generation_thresholds: a GenThresholds (default: calibrated).
    heal: a `hwnas heal` folder whose trained tensors replace the subnet's (its subnet when none is given).
    """
    from hwnas.hardware.targets import load_target
    from hwnas.io import atomic_dir

    tick = progress or (lambda done, total, label="": None)
    recipe.check()
    check_export_inputs(out, force=force, archive=archive, calibration=calibration)
    tgt = load_target(target)
    steps = 7
    tick(0, steps, "loading model")
    if heal is not None and subnet is None and layers is None and mlp_width is None:
        from hwnas.model.healed import heal_subnet

        subnet = heal_subnet(heal)
    loaded, dense, supernet_meta, subnet = _load_dense(model, subnet, order_channels, layers, mlp_width,
                                                       recovery=recovery, heal=heal)
    tokenizer = loaded.tokenizer
    reference = None
    if accuracy_tasks:  # before quantizing: the dense subnet shares tensors with the full model
        tick(0, steps, f"full model on the {accuracy_split} split (cached per item)")
        reference = _full_reference(loaded, accuracy_tasks, accuracy_split, accuracy_limit, data_dir, seed)
    calib = None
    if recipe.needs_calibration:
        from hwnas.deploy.quantize import load_calibration

        calib = load_calibration(tokenizer, calibration, n_samples=calib_samples, seq_len=calib_seq_len, seed=seed)
    gen_ref = None
    if generation_check:  # before quantization: in-place quantization of a subnet can touch shared weights
        from hwnas.deploy.gencheck import prepare_reference

        gen_ref = prepare_reference(loaded)
    tick(1, steps, f"quantizing ({recipe.name})")
    from hwnas.deploy.quantize import materialize, quantize_model, resolve_group_size

    # RTN leaves the model untouched: its float weights are traced as placeholders that `compress_ir`
    # replaces by the integer ones, so no dequantized float32 copy is made, and the codes are computed
    # after the trace (the trace's graph and the codes are never in memory together). GPTQ/AWQ change
    # weights (AWQ folds scales into the norms), so their dequantized model is what gets traced.
    if recipe.algorithm in ("rtn", "none"):
        recipe = resolve_group_size(recipe, dense)  # a bad group size fails before the trace
        qmodel, result = dense, None
        traced = dense

        def quantize():
            return quantize_model(traced, recipe, calib, inplace=True)
    else:
        result = quantize_model(dense, recipe, calib, inplace=dense is not loaded.model)
        recipe = result.recipe
        qmodel, quantize = materialize(result), None
        result.model = None
    dense = None
    out = Path(out)
    with atomic_dir(out, force=force) as tmp:
        tick(2, steps, "exporting OpenVINO IR")
        # After tracing, the torch weights are dead weight unless the generation check scores NLL with
        # the full model: a model this call loaded itself is released before the IR is compressed.
        owned = isinstance(model, (str, Path))
        release = _releaser(loaded, qmodel) if owned and not (generation_check and subnet is None) else None
        summary, result = _write_ir(qmodel, tokenizer, result, tmp, release=release, quantize=quantize)
        recipe = result.recipe
        del qmodel
        traced = None
        tick(3, steps, "smoke generation")
        prompt_ids = [int(i) for i in tokenizer(SMOKE_PROMPT, add_special_tokens=False)["input_ids"]][:32] or [0]
        smoke = {"prompt": SMOKE_PROMPT, "prompt_ids": prompt_ids, "tokens": greedy_tokens(tmp, prompt_ids),
                 "properties": dict(EXACT_PROPERTIES)}
        generation = None
        if generation_check:
            from hwnas.deploy.gencheck import check_built_bundle

            tick(3, steps, "generation check")
            what = f"subnet {subnet.key}" if subnet is not None else "the whole model"
            # NLL only where the full model is certainly intact (whole-model export quantizes a copy);
            # bench/genquality_calibration.py measured an absurd NLL after a subnet's in-place quantization
            generation = check_built_bundle(tmp, loaded, thresholds=generation_thresholds,
                                            allow_degenerate=allow_degenerate, what=what, reference=gen_ref,
                                            nll_model=subnet is None)
        host = current_host()
        measurement = None
        if measure:
            tick(4, steps, "measuring speed")
            try:
                measurement = measure_bundle(tmp, tgt, name=out.name)
            except ImportError:
                log.warning("hwnas.hardware.measure is not available; the manifest holds no speed measurement")
        accuracy = None
        if accuracy_tasks:
            tick(5, steps, f"scoring accuracy ({accuracy_split} split, paired with the full model)")
            accuracy = _paired_ir_accuracy(tmp, loaded, reference, tgt.resolved_properties(_host_obj()))
        tick(6, steps, "checksums and manifest")
        files = checksum_files(tmp)
        manifest = BundleManifest(
            name=out.name,
            model=_model_record(loaded),
            subnet=dict(subnet.to_dict(), key=subnet.key) if subnet is not None else None,
            supernet=supernet_meta,
            quantization=recipe.to_dict(),
            calibration_sha256=recipe.calibration.sha256 if recipe.calibration else None,
            ir=summary,
            target=tgt.to_dict(),
            host=host,
            measurement=measurement,
            accuracy=accuracy,
            smoke=smoke,
            search=search,
            generation=generation,
            files=files,
            tool_versions=tool_versions(),
            seed=seed,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        manifest.write(tmp)
    tick(7, steps, "done")
    arch = write_archive(out, archive_path(out), force=force) if archive else None
    log.info("bundle %s written (%s)", out, recipe.describe())
    return BundleResult(path=out, manifest=manifest, archive=arch)


def _host_obj():
    try:
        from hwnas.hardware.host import detect_host

        return detect_host(measure_bandwidth=False)
    except ImportError:  # pragma: no cover
        return None


def _full_reference(loaded: Any, tasks: Sequence[str], split: str, limit: int | None, data_dir: Any,
                    seed: int) -> tuple[Any, dict]:
    """(TaskSuite, the full float model's per-item results on it), cached per item."""
    from hwnas.accuracy.evaluate import TaskSuite
    from hwnas.accuracy.paired import full_model_items

    suite = TaskSuite(loaded.tokenizer, list(tasks), split=split, limit=limit, data_dir=data_dir, seed=seed)
    return suite, full_model_items(suite, loaded.model, loaded.source.content_sha256()[:16])


def _paired_ir_accuracy(folder: Path, loaded: Any, reference: tuple[Any, dict], properties: dict) -> dict:
    """Accuracy of the bundle's IR on the reference suite, and its paired difference from the full
    (float) model on the same items: what a user gives up, quantization included."""
    from hwnas.accuracy.paired import compare_items, comparison_verdict

    suite, full = reference
    acc = ir_accuracy(folder, loaded.tokenizer, suite=suite, properties=properties, keep_items=True)
    items = acc.pop("_items")
    acc["vs_full"] = {m: compare_items(items, full, m) for m in ("acc_norm", "acc")}
    acc["vs_full_basis"] = "bundle (OpenVINO IR) minus the full float model (PyTorch), same items"
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
    sn.space.validate(subnet, structure=False)
    if recovery and heal is None:
        from hwnas.model.recovery import make_recoverer

        sn.recoverer = make_recoverer(sn, loaded.tokenizer)
    dense = sn.extract(subnet)
    meta = {k: v for k, v in sn.meta.items() if k not in ("channel_order", "layer_scores")}
    meta["channels_ordered"] = bool(sn.meta.get("channels_ordered", order_channels))
    meta["recovery"] = sn.recovery_record(subnet)
    if heal is not None:
        from hwnas.model.healed import apply_heal, read_record

        meta["heal"] = apply_heal(dense, heal, subnet=subnet, model_sha256=loaded.source.sha256())
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
