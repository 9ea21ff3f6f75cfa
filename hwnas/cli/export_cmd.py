"""`hwnas export`, `hwnas verify`, `hwnas bench`, `hwnas run`: ship a subnet as a quantized OpenVINO bundle."""
from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import click

from hwnas.cli.common import (
    HEAD_CHOICES,
    QUANT_CHOICES,
    Choice,
    check_multiple_choice_tasks,
    check_nonempty_text,
    check_resources,
    check_subnet_early,
    data_dir_option,
    model_option,
    no_order_option,
    progress_bar,
    quiet_option,
    seed_option,
    subnet_options,
)

QUANT_HELP = "Weight quantization with Neural Compressor: int8 (RTN per-channel), int4 (RTN), gptq-int4, awq-int4, none."


def register(main: click.Group) -> None:
    for cmd in (export, verify, bench, run):
        main.add_command(cmd)


@click.command()
@model_option
@subnet_options
@click.option("--from", "search_dir", type=click.Path(file_okay=False), default=None,
              help="A `hwnas search` output folder to pick the subnet from (with --pick); with --speculative, "
                   "also a `hwnas search --objective speculative` folder (its chosen draft and k; --pick optional).")
@click.option("--pick", default=None,
              help="With --from: an index into pareto.json (0 = first), a subnet key, or 'fastest-within POINTS' "
                   "(lowest TPOT whose paired accuracy drop from the full model on the report (select) split is at "
                   "most POINTS points; the full model when none is).")
@click.option("--speculative", is_flag=True,
              help="Write a lossless speculative bundle: the whole model plus a subnet as its draft (--draft SPEC, "
                   "or --from/--pick, or by default the most important half of the layers at full width).")
@click.option("--draft", "draft_spec", default=None, help="With --speculative: the draft subnet (JSON or file, as --subnet).")
@click.option("--draft-tokens", type=int, default=None,
              help="With --speculative: draft tokens per step [default: the k chosen by the draft search given "
                   "with --from, else 3].")
@click.option("--quant", type=Choice(QUANT_CHOICES), default="int8", show_default=True, help=QUANT_HELP)
@click.option("--group-size", type=int, default=None,
              help="Input columns per scale; -1 = per channel. Default: per channel for int8, the largest of 128/64/32 dividing every layer width for int4.")
@click.option("--sym/--asym", default=None, help="Symmetric (no zero point) or asymmetric codes. Default: sym for int8, asym for int4.")
@click.option("--head", type=Choice(HEAD_CHOICES), default="int8", show_default=True, help="Precision of embeddings and lm_head: int8, f16 or f32.")
@click.option("--target", default="xeon", show_default=True, help="Target profile name (profiles/*.toml) or a .toml path.")
@click.option("--out", "out", required=True, type=click.Path(), help="New folder for the bundle.")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration text (.jsonl {\"text\"}/.json/.txt or a folder); default: calibration/.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=32, show_default=True, help="Calibration sequences (seeded sample), GPTQ/AWQ.")
@click.option("--calib-seq-len", type=click.IntRange(min=8), default=256, show_default=True, help="Tokens per calibration sequence at most.")
@click.option("--archive", is_flag=True, help="Also write OUT.tar.gz.")
@click.option("--no-measure", is_flag=True, help="Do not measure TTFT/TPOT/throughput into the manifest.")
@click.option("--tasks", default="arc_easy,arc_challenge,mmlu,piqa", show_default=True,
              help="Tasks scored on the final IR on the holdout split (comma list), paired with the full model.")
@click.option("--limit", "--accuracy-limit", "accuracy_limit", type=click.IntRange(min=0), default=300, show_default=True,
              help="Holdout items per task for the accuracy (0 = all; --accuracy-limit is the old spelling).")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Refit the subnet's down_proj weights to the full model before quantizing (training-free).")
@click.option("--heal", "heal_dir", type=click.Path(file_okay=False), default=None,
              help="A `hwnas heal` folder: ship its distilled subnet (the subnet defaults to the one it healed).")
@click.option("--no-accuracy", is_flag=True, help="Skip the accuracy evaluation.")
@click.option("--no-generation-check", is_flag=True,
              help="Skip the generation check (the manifest then holds no generation record for verify).")
@click.option("--allow-degenerate", is_flag=True,
              help="Ship the bundle even when its greedy generations fail the generation check (scores are still recorded).")
@data_dir_option
@seed_option
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder (and its archive).")
@no_order_option
@quiet_option
def export(model, subnet_spec, layers, mlp_width, search_dir, pick, speculative, draft_spec, draft_tokens, quant, group_size,
           sym, head, target, out, calibration, calib_samples, calib_seq_len, archive, no_measure, tasks, accuracy_limit,
           no_accuracy, allow_degenerate, data_dir, seed, force, no_order, quiet, recovery=True, no_generation_check=False,
           heal_dir=None):
    """Quantize a subnet with Neural Compressor and write an OpenVINO IR bundle with a manifest.

    The subnet is --subnet SPEC, --layers N [--mlp-width W], or picked from a search with --from
    DIR --pick ...; with none of them the model is exported whole.

    The bundle's greedy generations on fixed prompts are scored against the full model; a subnet
    that fails (degenerate text) is refused unless --allow-degenerate.

    The bundle loads in openvino_genai.LLMPipeline(OUT, "CPU") and
    optimum.intel.OVModelForCausalLM.from_pretrained(OUT); check it with `hwnas verify OUT`.
    """
    from hwnas.deploy.export import export_bundle

    recipe = _check_inputs(model, subnet_spec, layers, mlp_width, search_dir, pick, quant, group_size, sym, head,
                           target, out, force, archive, calibration)
    subnet, search, draft_tokens = _resolve_subnet(model, subnet_spec, layers, mlp_width, search_dir, pick,
                                                   speculative, draft_spec, draft_tokens, heal_dir)
    task_list = _task_list(no_accuracy, tasks, data_dir)
    if not search_dir and not speculative:  # --from/--speculative resolve their subnets later; checked there by size
        check_resources("export", model, subnet_spec=subnet_spec, layers=layers, mlp_width=mlp_width, out=out,
                        quant_bits={"int8": 8, "none": 16}.get(quant, 4),
                        calibrated_quant=quant in ("gptq-int4", "awq-int4"))
    if subnet is not None and subnet.weight_formats is not None and quant != "int8":
        click.echo(f"note: subnet {subnet.key} carries a weight format per layer; --quant {quant} is not used", err=True)
    if speculative:
        return _export_speculative(model, out, recipe, subnet, draft_spec, draft_tokens, search, quant, target, seed,
                                   force, archive, no_measure, calibration, calib_samples, calib_seq_len, task_list,
                                   accuracy_limit, data_dir, no_order, quiet)
    from hwnas.accuracy.genquality import DegenerateGenerationError
    from hwnas.search.picking import search_chance_skips

    refused: list[str] = []   # front candidates whose bundle failed the generation check (a fastest-within pick)
    # a fastest-within pick has a next candidate to fall back to when the bundle fails the generation check.
    # No PyTorch pre-check of the fake-quantized weights first: on the default model it costs ~50 s on every
    # export, more than what a failing candidate costs without it (its quantized IR ~20 s and the check ~19 s;
    # bench/precheck_cost.py); the holdout reference computed before quantizing is cached for the next one.
    fallback = bool(search_dir) and pick.strip().startswith("fastest-within")
    # tasks the search found its full model not above chance on support no claim: the holdout skips them too
    skip = search_chance_skips(search_dir) if search_dir else {}
    while True:
        with progress_bar(f"export {quant if subnet is None or subnet.weight_formats is None else 'per-layer formats'}",
                          enabled=not quiet) as prog:
            try:
                res = export_bundle(model, out, recipe=recipe, subnet=subnet, layers=layers, mlp_width=mlp_width,
                                    target=target, calibration=calibration, calib_samples=calib_samples,
                                    calib_seq_len=calib_seq_len, seed=seed, force=force, archive=archive,
                                    measure=not no_measure, accuracy_tasks=task_list,
                                    accuracy_limit=accuracy_limit or None, data_dir=data_dir, search=search,
                                    order_channels=not no_order, recovery=recovery, progress=prog,
                                    allow_degenerate=allow_degenerate, generation_check=not no_generation_check,
                                    heal=heal_dir, skip_tasks=skip)
                break
            except DegenerateGenerationError as e:
                key = (search or {}).get("record", {}).get("key")
                if not (fallback and key) or key in refused:
                    raise
                refused.append(key)   # nothing was written: try the next fastest candidate the rule allows
                subnet, search = _from_search(search_dir, pick, exclude=refused)
                if search["record"].get("key") in refused:   # no other candidate (the full model was refused)
                    raise
                click.echo(f"note: {key} fails the generation check ({e}); trying the next candidate of "
                           f"--pick {pick!r}, {search['record'].get('key')}", err=True)
                search["refused_by_generation_check"] = list(refused)
    _print_bundle(res, layers, search)


def _check_inputs(model, subnet_spec, layers, mlp_width, search_dir, pick, quant, group_size, sym, head, target, out,
                  force, archive, calibration):
    """Everything that can be wrong with the input fails here, before any model is loaded; the recipe."""
    from hwnas.deploy.export import check_export_inputs
    from hwnas.deploy.quantize import make_recipe
    from hwnas.errors import InvalidSubnetError
    from hwnas.hardware.targets import load_target

    recipe = make_recipe(quant, group_size=group_size, sym=sym, head=head)
    check_export_inputs(out, force=force, archive=archive, calibration=calibration)
    load_target(target)
    if sum(map(bool, (subnet_spec, search_dir, layers is not None or mlp_width is not None))) > 1:
        raise InvalidSubnetError("give one of --subnet, --layers/--mlp-width or --from/--pick")
    check_subnet_early(model, subnet_spec, layers, mlp_width)
    return recipe


def _resolve_subnet(model, subnet_spec, layers, mlp_width, search_dir, pick, speculative, draft_spec, draft_tokens,
                    heal_dir):
    """(subnet or None, search record or None, draft tokens) from --subnet, --from/--pick, --draft, --heal."""
    from hwnas.errors import InvalidSubnetError
    from hwnas.model.space import parse_subnet_spec
    from hwnas.search.speculative import is_draft_search

    draft_search = bool(search_dir) and is_draft_search(search_dir)
    if draft_search and not speculative:
        raise InvalidSubnetError(f"--from {search_dir} is a draft search (hwnas search --objective speculative); "
                                 "use it with --speculative")
    if bool(search_dir) != bool(pick) and not draft_search:
        raise InvalidSubnetError("--from SEARCH_DIR and --pick go together")
    subnet, search = None, None
    if subnet_spec:
        subnet = parse_subnet_spec(subnet_spec)
    elif draft_search and not draft_spec:
        subnet, search, draft_tokens = _from_draft_search(model, search_dir, pick, draft_tokens)
    elif search_dir:
        subnet, search = _from_search(search_dir, pick)
    draft_tokens = _check_speculative(speculative, subnet_spec, layers, mlp_width, search_dir, draft_spec, draft_tokens)
    if speculative and draft_spec:
        subnet = parse_subnet_spec(draft_spec)
    if heal_dir is not None:
        from hwnas.model.healed import heal_subnet

        if speculative:
            raise InvalidSubnetError("--heal and --speculative do not go together (a draft needs no heal: the full model checks it)")
        healed_for = heal_subnet(heal_dir)  # a bad or unfinished heal folder fails before loading
        if subnet is not None and subnet.architecture() != healed_for:
            raise InvalidSubnetError(f"--heal {heal_dir} was made for subnet {healed_for.key}, not {subnet.key}")
    return subnet, search, draft_tokens


def _from_draft_search(model, search_dir, pick, draft_tokens):
    from hwnas.errors import InvalidSubnetError
    from hwnas.model.loading import resolve_model
    from hwnas.search.speculative import read_draft_search

    dp = read_draft_search(search_dir, pick)
    if dp.model_sha256 and dp.model_sha256 != resolve_model(model).sha256():
        raise InvalidSubnetError(f"--from {search_dir} chose a draft for another model (sha256 "
                                 f"{dp.model_sha256[:12]}...) than --model {model}")
    search = {"dir": str(search_dir), "pick": dp.rule + f" (k={dp.k}, predicted {dp.record['best_tokens_per_s']:.1f} "
                                                        f"tokens/s, {dp.record['best_speedup_vs_full']:.2f}x the full model)"}
    if not dp.pays:
        click.echo(f"warning: the draft search in {search_dir} predicts no speed-up from draft {dp.subnet.key} "
                   f"({dp.record['best_speedup_vs_full']:.2f}x the full model); exporting it anyway", err=True)
    return dp.subnet, search, dp.k if draft_tokens is None else draft_tokens


def _from_search(search_dir, pick, exclude=()):
    """The picked subnet (with the deployment genes the search gave it) and what the manifest records of the pick."""
    from hwnas.search.picking import pick_from_search

    p = pick_from_search(search_dir, pick, exclude=exclude)
    search = {"dir": str(search_dir), "pick": p.rule, "record": {k: p.record.get(k) for k in
                                                                 ("key", "accuracy", "tpot_ms", "ttft_ms", "vs_full",
                                                                  "paired", "report") if k in p.record}}
    if pick.strip().startswith("fastest-within"):
        from hwnas.search.picking import pick_claim

        pts = float(pick.strip()[len("fastest-within"):].strip().lstrip("=").strip())
        search["claim_on_select_split"] = pick_claim(p.record, pts)
    return p.subnet, search


def _check_speculative(speculative, subnet_spec, layers, mlp_width, search_dir, draft_spec, draft_tokens):
    """The --speculative option combinations; the draft tokens per step (3 by default)."""
    from hwnas.errors import ExportError, InvalidSubnetError

    if (draft_spec or draft_tokens is not None) and not speculative:
        raise InvalidSubnetError("--draft and --draft-tokens go with --speculative")
    if speculative and (subnet_spec or layers is not None or mlp_width is not None or (draft_spec and search_dir)):
        raise InvalidSubnetError("with --speculative the bundle is the whole model; choose the draft with --draft or --from/--pick")
    if speculative and draft_tokens is None:
        draft_tokens = 3
    if speculative and not 1 <= draft_tokens <= 16:
        raise ExportError(f"--draft-tokens {draft_tokens} is invalid; accepted: 1 to 16")
    return draft_tokens


def _task_list(no_accuracy, tasks, data_dir):
    task_list = None if no_accuracy else [t.strip() for t in tasks.split(",") if t.strip()]
    if task_list:
        check_multiple_choice_tasks(tasks, "export", "`hwnas eval --subnet ... --tasks wikitext2` gives a subnet's "
                                    "perplexity paired with the full model")
        from hwnas.datadir import resolve_data_dir

        resolve_data_dir(data_dir)  # DataError now rather than after quantizing
    return task_list


def _export_speculative(model, out, recipe, subnet, draft_spec, draft_tokens, search, quant, target, seed, force,
                        archive, no_measure, calibration, calib_samples, calib_seq_len, task_list, accuracy_limit,
                        data_dir, no_order, quiet):
    from hwnas.deploy.speculative import export_speculative_bundle

    with progress_bar(f"export speculative {quant}", enabled=not quiet) as prog:
        res = export_speculative_bundle(model, out, recipe=recipe, draft=subnet, num_assistant_tokens=draft_tokens,
                                        draft_rule=(search or {}).get("pick") or ("--draft" if draft_spec else None),
                                        target=target, seed=seed, force=force, archive=archive, measure=not no_measure,
                                        progress=prog, calibration=calibration, calib_samples=calib_samples,
                                        calib_seq_len=calib_seq_len, accuracy_tasks=task_list,
                                        accuracy_limit=accuracy_limit or None, data_dir=data_dir,
                                        order_channels=not no_order)
    click.echo(f"speculative bundle {res.path}: {res.manifest.recipe.describe()}, {res.nbytes / 1e6:.1f} MB, "
               f"draft {subnet.key if subnet else 'default'} with {draft_tokens} draft tokens per step")


def _print_bundle(res, layers, search):
    """What was written: recipe, size, runtime settings, speed, holdout accuracy, generation check."""
    m = res.manifest
    if layers is not None and m.subnet:
        click.echo(f"--layers {layers} kept layers {list(m.subnet['layers'])} (the search space's layer mode)")
    click.echo(f"bundle {res.path}: {m.recipe.describe()}, {res.nbytes / 1e6:.1f} MB"
               + (f", subnet {m.subnet['key']}" if m.subnet else ", whole model")
               + (" (healed)" if (m.supernet or {}).get("heal") else ""))
    if m.runtime:
        click.echo("  runtime settings: " + ", ".join(f"{k}={v}" for k, v in m.runtime["genes"].items()))
    if m.measurement:
        click.echo(f"  TTFT {m.measurement['ttft_ms']:.1f} ms, TPOT {m.measurement['tpot_ms']:.2f} ms, "
                   f"throughput {m.measurement['throughput_tok_s']:.1f} tok/s ({m.target['name']})")
    if search and search.get("claim_on_select_split"):
        click.echo(f"  pick ({search['pick']}): select split {search['claim_on_select_split']}")
    if m.accuracy and m.accuracy.get("vs_full"):
        _print_accuracy(m.accuracy)
    if m.generation:
        from hwnas.accuracy.genquality import GenQualityReport

        click.echo(f"  generation check: {GenQualityReport.from_dict(m.generation['report']).summary()}"
                   + (" -- shipped anyway (--allow-degenerate)" if m.generation.get("forced_ship") else ""))
    if res.archive:
        click.echo(f"  archive {res.archive}")


def _print_accuracy(accuracy):
    vs = accuracy["vs_full"]["acc_norm"]
    o = vs["overall"]
    full_mean = sum(t["full"] for t in vs["tasks"].values()) / len(vs["tasks"])
    sub_mean = sum(t["subnet"] for t in vs["tasks"].values()) / len(vs["tasks"])
    click.echo(f"  acc_norm on the {accuracy['split']} split ({o['items']} items no pick rule saw, mean of "
               f"{len(vs['tasks'])} tasks): bundle {sub_mean:.1f}%, full model {full_mean:.1f}%, "
               f"paired difference {o['points']:+.2f} ± {o['stderr']:.2f} points (95% CI {o['ci95'][0]:+.2f} to "
               f"{o['ci95'][1]:+.2f})")
    click.echo(f"  {accuracy['verdict_1pt']}")


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--measure", is_flag=True, help="Also re-measure TPOT and compare with the manifest.")
@click.option("--tolerance", type=float, default=0.25, show_default=True, help="Allowed TPOT slow-down with --measure (fraction).")
@click.option("--no-generate", is_flag=True, help="Skip the greedy-generation check.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--model", "-m", "model", default=None,
              help="Full model (spec as for export) to add its NLL of the bundle's generations to the generation check.")
def verify(bundle, measure, tolerance, no_generate, as_json, model):
    """Check a bundle folder or .tar.gz: checksums, manifest, IR load, greedy generation and the
    generation-quality check against the full model's recorded tokens. Exit 1 on any problem."""
    from hwnas.deploy.archive import check_archive_members
    from hwnas.deploy.verify import verify_bundle

    if tolerance <= 0:
        raise click.BadParameter(f"{tolerance} must be > 0 (allowed TPOT slow-down as a fraction, e.g. 0.25)", param_hint="'--tolerance'")
    if Path(bundle).is_file() and tarfile.is_tarfile(bundle) is False:
        check_archive_members(bundle)  # not an archive at all: bad input (exit 2), not a failed bundle
    full_model = None
    if model:
        from hwnas.model.loading import load_model

        full_model = load_model(model).model
    rep = verify_bundle(bundle, generate=not no_generate, measure=measure, tolerance=tolerance, full_model=full_model)
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        for c in rep.checks:
            click.echo(f"ok    {c}")
        for w in rep.warnings:
            click.echo(f"warn  {w}")
        for p in rep.problems:
            click.echo(f"FAIL  {p}")
        if rep.generated is not None:
            click.echo(f"generated: {rep.generated!r}")
    if not rep.ok:
        if not as_json:
            click.echo(f"bundle {bundle} failed verification ({len(rep.problems)} problem(s))", err=True)
        sys.exit(1)


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--against", default=None, help="Baseline model (default: the bundle's source model).")
@click.option("--target", default=None, help="Target profile (default: the bundle's).")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch fp32 baseline.")
@click.option("--out", "--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows as JSON to this file (--json is the old spelling).")
@seed_option
@quiet_option
def bench(bundles, against, target, no_torch, json_out, seed, quiet):
    """TTFT/TPOT/throughput of bundles vs the full model (optimum-intel NNCF int8 and PyTorch fp32), same run.

    A speculative bundle gives two rows: its full model without the draft (timed with the others) and
    the speculative pair through openvino-genai, whose speed-up is against that same bundle without its
    draft in the same harness."""
    from hwnas.deploy.benchmark import bench_bundles, format_table, ratios
    from hwnas.io import write_json_atomic

    with progress_bar("bench", enabled=not quiet) as prog:
        rows = bench_bundles(list(bundles), against=against, target=target, torch_baseline=not no_torch,
                             seed=seed, progress=prog)
    table = ratios(rows)
    click.echo(format_table(table))
    click.echo("speed-up = TPOT of the NNCF int8 full model / TPOT, measured interleaved [95% interval over paired rounds; "
               "! = a figure stayed uncertain]; smaller = its weight bytes / weight bytes")
    for d in table:
        if d["kind"] == "speculative":
            click.echo(f"{d['name']}: speculative decoding (openvino-genai) at {d['decode_tok_s']:.1f} tokens/s, "
                       f"{d['decode_speedup']:.2f}x the same bundle without its draft; greedy tokens identical in "
                       f"{d['identical_greedy_tokens']} rounds")
    if json_out:
        write_json_atomic(json_out, {"rows": table})


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", "-p", required=True, callback=check_nonempty_text, help="Prompt text.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True, help="Tokens to generate at most.")
@click.option("--chat/--no-chat", default=False,
              help="Wrap the prompt as a user turn in the model's chat template (instruct models); default: raw text.")
@click.option("--target", default=None, help="OpenVINO properties from this target (default: the bundle's).")
def run(bundle, prompt, max_new_tokens, chat, target):
    """Generate text from a bundle with openvino-genai, streaming, as an edge server would."""
    import openvino_genai

    from hwnas.deploy.manifest import read_manifest
    from hwnas.deploy.runtime import genai_pipeline
    from hwnas.deploy.settings import bundle_properties

    man = read_manifest(bundle)
    text = _chat_prompt(bundle, prompt) if chat else prompt  # before the (slow) pipeline load
    props = bundle_properties(man, target)  # the target's properties with the bundle's runtime genes over them
    pipe = genai_pipeline(bundle, props)
    cfg = openvino_genai.GenerationConfig()
    cfg.max_new_tokens = max_new_tokens
    cfg.do_sample = False
    cfg.apply_chat_template = False  # genai would apply it to every string prompt; --chat decides
    from hwnas.deploy.speculative import apply_draft_tokens

    apply_draft_tokens(bundle, cfg)

    def stream(sub: str) -> bool:
        click.echo(sub, nl=False)
        return False

    pipe.generate(text, cfg, stream)
    click.echo()


def _chat_prompt(bundle: str, prompt: str) -> str:
    """The prompt as one user turn in the bundle tokenizer's chat template, ready for the reply."""
    from transformers import AutoTokenizer

    from hwnas.errors import BundleError

    try:
        tok = AutoTokenizer.from_pretrained(bundle)
    except Exception as e:  # noqa: BLE001
        raise BundleError(f"--chat: cannot read the tokenizer in {bundle}: {e}") from None
    if not getattr(tok, "chat_template", None):
        raise BundleError(f"--chat: the model in {bundle} has no chat template; run without --chat")
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
