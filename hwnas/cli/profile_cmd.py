"""`hwnas profile`: measure subnets under a target with OpenVINO and fit the latency model."""
from __future__ import annotations

import click

from hwnas.cli.common import (
    Choice,
    model_option,
    progress_bar,
    quiet_option,
    seed_option,
)


def register(main: click.Group) -> None:
    main.add_command(profile)


@click.command()
@click.option("--target", "-t", "target_spec", required=True,
              help="Target name (xeon, core, edge: profiles/NAME.toml) or a path to your own .toml file.")
@model_option
@click.option("--samples", type=int, default=12, show_default=True,
              help="Whole subnets to measure besides the full model (the smallest one, then random ones).")
@click.option("--out", "out", type=click.Path(), default=None,
              help="New folder for profile.json [default: profile-TARGET].")
@seed_option
@click.option("--probe-layers", type=int, default=0, show_default=True,
              help="Also measure probe models of K layers per allowed width for the latency table (0: none).")
@click.option("--latency-form", type=Choice(["linear", "per_width"]), default="linear", show_default=True,
              help="Per-layer cost linear in MLP width, or one free cost per width.")
@click.option("--holdout", type=int, default=0, show_default=True,
              help="Also measure N subnets the latency model is never fit on, to report its error on them.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--quant", type=Choice(["int8", "auto"]), default="int8", show_default=True,
              help="auto: also measure a designed set of weight-format / runtime variants of the measured subnets "
                   "(integer IRs with their runtime settings) and fit a gene-aware latency model, which "
                   "`hwnas search --quant auto --profile` predicts with; its leave-one-out error is reported per gene.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Measure on a node of the Ray cluster at ADDRESS (HOST:PORT or 'auto') that advertises the "
                   "resource hwnas-target-TARGET, in one task; profile.json lands here (docs/cluster.md).")
@quiet_option
def profile(target_spec: str, model: str, samples: int, out: str | None, seed: int, probe_layers: int,
            latency_form: str, holdout: int, force: bool, quiet: bool, quant: str = "int8",
            ray_address: str | None = None) -> None:
    """Measure the full model and SAMPLES subnets on this CPU with OpenVINO under --target.

    Writes OUT/profile.json: the target, this host (CPU, ISA, fingerprint), every measurement
    (TTFT, TPOT, throughput with 95% intervals over interleaved rounds, rounds set aside for
    interference, raw samples), the latency model that predicts unmeasured subnets and its
    cross-validated error split into model error and measurement noise. Later commands take it
    with --profile.
    """
    from hwnas.errors import MeasurementError
    from hwnas.hardware.targets import load_target
    from hwnas.io import check_writable_dir_target

    target = load_target(target_spec)  # a bad target fails before anything is loaded
    if samples < 1:
        raise MeasurementError(f"--samples must be >= 1 (subnets measured besides the full model), got {samples}")
    if holdout < 0:
        raise MeasurementError(f"--holdout must be >= 0 (subnets measured but never fit on), got {holdout}")
    if probe_layers == 1 or probe_layers < 0:
        raise MeasurementError(f"--probe-layers must be 0 (no probes) or >= 2, got {probe_layers}")
    out = out or f"profile-{target.name}"
    check_writable_dir_target(out, force=force)
    from hwnas.cli.common import check_resources

    check_resources("profile", model, samples=samples)
    if ray_address is not None:   # the same profile, measured on a target node of a Ray cluster
        _profile_on_cluster(ray_address, target, model, out, force=force, samples=samples, seed=seed,
                            probe_layers=probe_layers, form=latency_form, holdout=holdout, quant=quant)
        return

    from hwnas.hardware.host import detect_host
    from hwnas.hardware.profile import PROFILE_FILE, run_profile
    from hwnas.model.loading import load_model

    host = detect_host()
    click.echo(f"Measuring on: {host.describe()}  [host {host.fingerprint}]")
    if not target.cpu_matches(host.cpu_model):
        click.secho(
            f"Note: target '{target.name}' is meant for {' / '.join(target.expected_cpu)} CPUs; this host is "
            f"{host.cpu_model}. The numbers below are {host.cpu_model} numbers under the {target.name} settings.",
            fg="yellow",
        )
    loaded = load_model(model)
    with progress_bar(f"profile {target.name}", enabled=not quiet) as update:
        prof = run_profile(loaded, target, samples=samples, seed=seed, out_dir=out, progress=update,
                           probe_layers=probe_layers, form=latency_form, host=host, force=force, holdout=holdout,
                           quant=quant)
    _print_report(prof)
    if prof.gene_model is not None:
        err = prof.gene_model.error
        click.echo(f"gene-aware latency model: leave-one-out TPOT MAPE {err['tpot_ms_mape_pct']:.1f}% over "
                   f"{err['n_variants']} variants; per gene: " + ", ".join(
                       f"{g} {e['tpot_ms_mape_pct']:.1f}%" for g, e in err["per_gene"].items()))
    click.echo(f"wrote {out}/{PROFILE_FILE}")


def _profile_on_cluster(address: str, target, model: str, out: str, *, force: bool, **kwargs) -> None:
    """Join the cluster (one-line errors before any model is loaded), profile on a target node, write --out."""
    from hwnas.hardware.cluster import connect, shutdown
    from hwnas.hardware.cluster_profile import profile_on_cluster
    from hwnas.hardware.profile import PROFILE_FILE, load_profile
    from hwnas.model.loading import resolve_model

    src = resolve_model(model)   # a bad model spec fails here, before the cluster is used
    spec = src.spec if src.kind == "default" else str(src.path.resolve())   # the same path on every node
    cluster = connect(address, target.name)
    try:
        click.echo(f"Measuring on a node of {address} with {cluster.resource} "
                   f"[host {cluster.fingerprint}]; the model loads there from {spec}")
        res = profile_on_cluster(cluster, spec, target, out, force=force, **kwargs)
    finally:
        shutdown()
    _print_report(load_profile(out))
    click.echo(f"measured on node {res['ip']} (host {res['host']['fingerprint']}) in {res['seconds']:.0f} s; "
               f"wrote {out}/{PROFILE_FILE}")


def _print_report(prof) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()  # not a terminal: full width (the CLI sets COLUMNS), no 80-column cut
    m0 = prof.measurements[0]
    props = m0.properties
    console.print(
        f"target [bold]{prof.target.name}[/]: precision {props.get('INFERENCE_PRECISION_HINT', 'default')}, "
        f"{props.get('INFERENCE_NUM_THREADS', 'auto')} threads, KV cache {props.get('KV_CACHE_PRECISION', 'default')}; "
        f"prompt {m0.prompt_tokens} tokens, {m0.new_tokens} generated, batch sizes {list(prof.target.workload.batch_sizes)}"
    )
    table = Table(title=f"measured on {prof.host.cpu_model} ({prof.host.fingerprint})")
    for col, just in (("subnet", "left"), ("layers", "right"), ("MLP widths", "left"), ("params (M)", "right"),
                      (f"TTFT ms @{m0.latency_batch_size}", "right"), (f"TPOT ms @{m0.latency_batch_size}", "right"),
                      (f"tok/s @{m0.throughput_batch_size}", "right"), ("TPOT LOO pred.", "right")):
        table.add_column(col, justify=just)
    cvp = prof.latency_model.error.get("cv_predictions", {}).get(f"tpot_ms@{m0.latency_batch_size}", [])
    for i, m in enumerate(prof.measurements):
        widths = sorted(set(m.mlp_widths))
        wdesc = str(widths[0]) if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
        lat = m.batch(m.latency_batch_size)
        flag = "" if m.stable else " [yellow]![/]"
        table.add_row(m.subnet_key, str(len(m.mlp_widths)), wdesc, f"{m.n_params / 1e6:.1f}",
                      _with_ci(m.ttft_ms, lat.ttft_ci_ms, 1) + flag, _with_ci(m.tpot_ms, lat.tpot_ci_ms, 2) + flag,
                      f"{m.throughput_tok_s:.1f}", f"{cvp[i]:.2f}" if i < len(cvp) and cvp[i] is not None else "")
    console.print(table)
    err = prof.latency_model.error
    if "ttft_ms_mape_pct" not in err:   # cross_validate could not refit without one subnet: no error figure
        why = err.get("note", "the profile holds no leave-one-out figure")
        console.print(f"latency model ({prof.latency_model.form}): its error could not be estimated with "
                      f"{len(prof.measurements)} measured subnets ({why}); measure more with --samples")
    else:
        console.print(
            f"latency model (additive per-layer table, {prof.latency_model.form}), leave-one-out MAPE on "
            f"{err['n_subnets']} whole subnets: TTFT {err['ttft_ms_mape_pct']:.1f}%, TPOT {err['tpot_ms_mape_pct']:.1f}%, "
            f"throughput {err['throughput_tok_s_mape_pct']:.1f}%"
        )
        if err.get("tpot_ms_model_error_pct") is not None:
            console.print(
                f"  of which the model: TTFT {err['ttft_ms_model_error_pct']:.1f}%, TPOT {err['tpot_ms_model_error_pct']:.1f}% "
                f"(RMS, net of noise); the measurements themselves: TTFT +-{err['ttft_ms_measurement_noise_pct']:.1f}%, "
                f"TPOT +-{err['tpot_ms_measurement_noise_pct']:.1f}% (median 95% interval)"
            )
    ho = err.get("holdout")
    if ho:
        console.print(f"held-out subnets ({ho['n_subnets']}, never fit on): MAPE TTFT {ho['ttft_ms_mape_pct']:.1f}%, "
                      f"TPOT {ho['tpot_ms_mape_pct']:.1f}%")
    sess = prof.measurements[0].session if prof.measurements else {}
    if sess.get("rounds"):
        load = sess.get("load", {})
        console.print(f"{sess['rounds']} interleaved rounds, {sess['rounds'] - sess.get('clean_rounds', sess['rounds'])} set "
                      f"aside for interference; load average {load.get('loadavg_before')} -> {load.get('loadavg_after')}")
    r = prof.ranking
    if r.get("kendall_tau_params_vs_tpot_ms") is not None:
        console.print(
            f"ranking by parameter count vs measured TPOT: Kendall tau {r['kendall_tau_params_vs_tpot_ms']:.2f}"
            + (f" (latency model: {r['kendall_tau_latency_model_vs_tpot_ms']:.2f})"
               if r.get("kendall_tau_latency_model_vs_tpot_ms") is not None else "")
        )
    unstable = [m for m in prof.measurements + prof.probes + prof.holdout if not m.stable]
    if unstable:
        console.print(f"[yellow]! {len(unstable)} measurement(s) stayed uncertain after re-measuring; the host may be "
                      f"busy. {unstable[0].subnet_key}: {unstable[0].note}[/]")
    if prof.host_note:
        console.print(f"[yellow]{prof.host_note}[/]")
    t = prof.timings_s
    console.print(f"took {t.get('total', 0):.0f} s (export {t.get('export', 0):.0f} s, measure {t.get('measure', 0):.0f} s; "
                  f"{t.get('irs_exported', 0)} IRs exported, {t.get('irs_from_cache', 0)} from cache)")


def _with_ci(value: float, ci, digits: int) -> str:
    """'12.34 (+-0.21)': the figure and the half-width of its 95% interval."""
    if not ci:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} (±{(ci[1] - ci[0]) / 2:.{digits}f})"
