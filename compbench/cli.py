"""Command line: parse, call one function, print, exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from compbench.errors import UsageError

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE = 0, 1, 2


def fail_usage(message: str) -> NoReturn:
    """One ``compbench: error:`` line per line of ``message`` on stderr, then exit 2."""
    for line in message.splitlines():
        click.echo(f"compbench: error: {line}", err=True)
    sys.exit(EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compbench")
def main() -> None:
    """Benchmark model-compression methods: accuracy, size and speed, side by side."""


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", help="GLUE data folder (parquet or TSV layout) or 'hub'; overrides COMPBENCH_DATA_DIR and the suite.")
@click.option("--limit-train", type=click.IntRange(min=1), help="Use a seeded subset of this many training rows.")
@click.option("--limit-eval", type=click.IntRange(min=1), help="Use a seeded subset of this many evaluation rows.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
@click.option("--run-id", help="Name of the run folder (default: SUITE-DATE-TIME).")
@click.option("--cache-dir", help="Where built model artifacts are kept (default: COMPBENCH_CACHE_DIR, the suite's cache_dir, ~/.cache/compbench).")
@click.option("--progress/--no-progress", default=True, help="Progress bars (plain log lines when not on a terminal).")
def run(suite_file: Path, data_dir, limit_train, limit_eval, results_dir, run_id, cache_dir, progress) -> None:
    """Run SUITE_FILE and write results/<run>/ (results.jsonl, results.csv, report.md, env.json)."""
    from compbench.progress import Reporter
    from compbench.runner import RunOptions, run_suite
    from compbench.suite import load_suite

    try:
        suite = load_suite(suite_file)
        options = RunOptions(data_dir=data_dir, limit_train=limit_train, limit_eval=limit_eval, results_dir=results_dir,
                             run_id=run_id, cache_dir=cache_dir, reporter=Reporter(enabled=progress))
        summary = run_suite(suite, suite_file, options)
    except UsageError as exc:
        fail_usage(str(exc))
    except KeyboardInterrupt:
        click.echo("compbench: interrupted; every finished row is in the run folder's results.jsonl and report.md", err=True)
        sys.exit(130)
    sys.exit(EXIT_FAILED_CELLS if summary.failed else EXIT_OK)


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cells", "show_cells", is_flag=True, help="Also list every cell.")
def validate(suite_file: Path, show_cells: bool) -> None:
    """Check SUITE_FILE without running it; count its cells per task and pipeline."""
    from compbench.suite import expand, load_suite

    try:
        suite = load_suite(suite_file)
    except UsageError as exc:
        fail_usage(str(exc))
    cells = expand(suite)
    click.echo(f"{suite_file}: ok, {len(cells)} cells: {len(suite.tasks)} tasks x {len(suite.pipelines)} pipelines "
               f"({', '.join(p.name for p in suite.pipelines)}) on their backends")
    for cell in cells if show_cells else []:
        click.echo(f"  {cell.cell_id}")


@main.command(name="list")
def list_components() -> None:
    """Show registered compressors and backends, and whether each backend can run here."""
    from compbench.backends import BACKENDS
    from compbench.compressors import COMPRESSORS

    click.echo("backends:")
    for name in BACKENDS.names():
        for device in ("cpu", "cuda"):
            click.echo(f"  {name:<14} {device:<5} {_availability(name, device)}   [{BACKENDS.origin(name)}]")
    click.echo("compressors:")
    names = COMPRESSORS.names()
    if not names:
        click.echo("  (none registered yet; the baseline pipeline needs none)")
    for name in names:
        click.echo(f"  {name:<14} [{COMPRESSORS.origin(name)}]")
    for registry in (BACKENDS, COMPRESSORS):
        for plugin, error in registry.plugin_errors.items():
            click.echo(f"  plugin {plugin!r} failed to load: {error}")


def _availability(name: str, device: str) -> str:
    from compbench.backends import BACKENDS, BackendOptions

    try:
        availability = BACKENDS.get(name)().availability(BackendOptions(name=name, device=device))
    except Exception as exc:  # a plugin's bug must not hide the rest of the list
        return f"broken: {type(exc).__name__}: {exc}"
    return "available" if availability.ok else f"unavailable: {availability.reason}"


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Rebuild results.csv and report.md of RUN_DIR from its results.jsonl."""
    from compbench.report import write_reports

    if not (run_dir / "results.jsonl").is_file():
        fail_usage(f"{run_dir} has no results.jsonl; pass a run folder such as results/quick-20260101-120000")
    write_reports(run_dir)
    click.echo(run_dir / "report.md")


if __name__ == "__main__":
    main()
