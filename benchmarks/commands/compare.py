"""``python -m benchmarks compare``: two runs on the same queries, with a bootstrap CI and a paired test."""
from __future__ import annotations

from pathlib import Path

import click

from benchmarks.commands.options import print_json
from benchmarks.core.errors import InputError


@click.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--setting", type=click.Choice(["easy", "medium", "hard"]), default="medium", show_default=True,
              help="Revisited difficulty compared.")
@click.option("--n", type=click.IntRange(min=1), default=1, show_default=True, help="The N of Recall@N (places).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Queries listed.")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (points).")
def compare_command(a: Path, b: Path, setting: str, n: int, top: int, resamples: int, seed: int,
                    as_json: bool) -> None:
    """B against A on the same queries: per-query differences, the mean difference with a bootstrap 95% CI, a
    paired permutation test, and the queries that changed most."""
    from benchmarks.evaluation.results import load_result
    from benchmarks.reports.compare import compare

    result_a, result_b = load_result(a), load_result(b)
    _refuse_ignored_option(click.get_current_context(), result_a.protocol, a)
    c = compare(result_a, result_b, setting, n, resamples, seed, (str(a), str(b)))
    changed = [{"query": int(c.queries[i]), "a": 100 * c.a[i], "b": 100 * c.b[i],
                "difference": 100 * (c.b[i] - c.a[i])} for i in c.most_changed(top)]
    summary = {"dataset": result_a.dataset, "measure": c.measure, "queries": len(c.queries),
               "a": 100 * float(c.a.mean()), "b": 100 * float(c.b.mean()), "difference": c.difference,
               "ci95": [c.ci_low, c.ci_high], "p_value": c.p_value, "resamples": c.resamples}
    if as_json:
        print_json({**summary, "most_changed": changed})
        return
    click.echo(f"{result_a.dataset}, per-query {c.measure}, {len(c.queries)} queries")
    click.echo(f"  A {result_a.method} {result_a.weights}: {summary['a']:.2f}   ({a})")
    click.echo(f"  B {result_b.method} {result_b.weights}: {summary['b']:.2f}   ({b})")
    click.echo(f"  B - A: {c.difference:+.2f} points, bootstrap 95% CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}], "
               f"paired permutation test p = {c.p_value:.4f} ({resamples} resamples, seed {seed})")
    if changed:
        click.echo(f"queries that changed most:\n  {'query':>6} {'A':>7} {'B':>7} {'B - A':>8}")
        for row in changed:
            click.echo(f"  {row['query']:>6} {row['a']:7.2f} {row['b']:7.2f} {row['difference']:+8.2f}")


def _refuse_ignored_option(ctx: click.Context, protocol: str, path: Path) -> None:
    """An explicit --setting or --n that the result's protocol would ignore is an error, not silently dropped."""
    from click.core import ParameterSource

    given = {name for name in ("setting", "n") if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if "setting" in given and protocol != "revisited":
        raise InputError(f"--setting applies to revisited results; this is a {protocol} result"
                         + (" (places use --n)" if protocol == "recall" else " (one AP per query)"), path)
    if "n" in given and protocol != "recall":
        raise InputError(f"--n applies to place-recognition (Recall@N) results; this is a {protocol} result"
                         + (" (use --setting)" if protocol == "revisited" else ""), path)
