"""The command-line interface: ``python -m benchmarks --help``, assembled from one module per command group.

Bad input (an :class:`InputError`) prints one line, ``error: <file>: <problem>``, and exits with code 2.
"""
from __future__ import annotations

import logging

import click

from benchmarks.commands.compare import compare_command
from benchmarks.commands.data import data
from benchmarks.commands.evaluate import evaluate_command
from benchmarks.commands.extract import extract_command
from benchmarks.commands.plot import plot
from benchmarks.commands.plugins import list_plugins
from benchmarks.commands.reproduce import reproduce_command
from benchmarks.commands.score import score
from benchmarks.commands.speed import speed
from benchmarks.commands.tables import check_command, tables_command
from benchmarks.commands.train import train_command
from benchmarks.core.errors import InputError


class _Group(click.Group):
    """The top group: an :class:`InputError` from any subcommand becomes one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InputError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Reproducible benchmarks for image retrieval and visual place recognition."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if verbose else logging.WARNING)  # CPU-feature probing


for command in (list_plugins, score, data, train_command, evaluate_command, extract_command, speed, tables_command,
                check_command, compare_command, plot, reproduce_command):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="python -m benchmarks")
