"""``python -m benchmarks list``: the registered methods and datasets."""
from __future__ import annotations

import click

from benchmarks.commands.options import print_json


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_plugins(as_json: bool) -> None:
    """Registered methods and datasets, with one-line descriptions."""
    from datasets import load_plugins as load_datasets
    from methods import load_plugins

    methods = {name: cls.description for name, cls in load_plugins().items()}
    datasets = {name: cls.description for name, cls in load_datasets().items()}
    if as_json:
        print_json({"methods": methods, "datasets": datasets})
        return
    width = max(map(len, [*methods, *datasets]), default=0)
    for title, entries in (("methods", methods), ("datasets", datasets)):
        click.echo(f"{title}:")
        for name, description in entries.items():
            click.echo(f"  {name:<{width}} {description}")
        if not entries:
            click.echo("  (none registered yet)")
