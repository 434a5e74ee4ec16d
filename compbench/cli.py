"""Command line: parse, call one function, print, exit code."""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

import click

from compbench.common.errors import UsageError

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE = 0, 1, 2


def fail_usage(message: str) -> NoReturn:
    """One ``compbench: error:`` line per line of ``message`` on stderr, then exit 2."""
    for line in message.splitlines():
        click.echo(f"compbench: error: {line}", err=True)
    sys.exit(EXIT_USAGE)


class Seconds(click.ParamType):
    """A number of seconds above 0 and at most a week (click's FloatRange lets nan and inf through)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        from compbench.config.limits import MAX_TIMEOUT_SECONDS

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not 0 < seconds <= MAX_TIMEOUT_SECONDS:     # false for nan too
            self.fail(f"{value!r}: give a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}", param, ctx)
        return seconds


SECONDS = Seconds()


class SeqLength(click.ParamType):
    """A shape's sequence length as the rows name it: a whole number of tokens, or ``natural``."""

    name = "tokens|natural"

    def convert(self, value, param, ctx):
        if value == "natural" or isinstance(value, int):
            return value
        try:
            tokens = int(value)
        except (TypeError, ValueError):
            tokens = 0
        if tokens < 1:
            self.fail(f"{value!r}: give a whole number of tokens above 0, or natural", param, ctx)
        return tokens


ROWS = click.IntRange(min=1, max=1_000_000_000)     # common.fields.MAX_ROWS (not imported: the CLI starts light)


@contextmanager
def usage_errors() -> Iterator[None]:
    """A user's mistake raised inside the block ends the command with its one line and exit 2."""
    try:
        yield
    except UsageError as exc:
        fail_usage(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compbench")
def main() -> None:
    """Benchmark model-compression methods: accuracy, size and speed, side by side."""


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Finish the run in this folder: only its missing (and failed) cells run, with its recorded settings.",
)
@click.option("--data-dir", help="GLUE data folder (parquet or TSV layout) or 'hub'; overrides COMPBENCH_DATA_DIR "
                                 "and the suite.")
@click.option("--limit-train", type=ROWS, help="Use a seeded subset of this many training rows.")
@click.option("--limit-eval", type=ROWS, help="Use a seeded subset of this many evaluation rows.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--run-id", help="Name of the run folder (default: SUITE-DATE-TIME).")
@click.option("--cache-dir", help="Where built models and measured cells are kept (default: COMPBENCH_CACHE_DIR, "
                                  "the suite's cache_dir, ~/.cache/compbench).")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="local (default): one job at a time on this machine; ray: jobs as Ray tasks "
                   "(pip install 'compbench[ray]').")
@click.option("--address", help="Ray cluster address (auto, ray://host:10001); default: start Ray on this machine.")
@click.option("--isolation", type=click.Choice(["subprocess", "inline"]),
              help="Each build and cell in a fresh process (default) or in the runner's own; overrides the suite's "
                   "runner.isolation.")
@click.option("--cell-timeout", type=SECONDS,
              help="Seconds one cell's measurement may take (overrides runner.cell_timeout).")
@click.option("--build-timeout", type=SECONDS,
              help="Seconds one pipeline's build may take (overrides runner.build_timeout).")
@click.option("--build-cpus", type=click.IntRange(min=1, max=4096),
              help="Cores a build asks of Ray (default: this machine's).")
@click.option("--fail-fast/--no-fail-fast", default=None,
              help="Stop at the first failed cell (the run can be resumed); on --resume, --no-fail-fast lifts it.")
@click.option("--remeasure", is_flag=True,
              help="Measure every cell again instead of reusing cached cell results (models are still reused).")
@click.option("--progress/--no-progress", default=True, help="Live view on a terminal (plain log lines elsewhere).")
def run(suite_file: Path | None, resume_dir: Path | None, results_dir: Path, run_id: str | None, progress: bool,
        **overrides) -> None:
    """Run SUITE_FILE and write results/<run>/ (results.jsonl, results.csv, report.md, env.json), or finish a run
    with --resume."""
    from compbench.common.progress import Reporter
    from compbench.execution.runner import resume_run, start_run

    if (suite_file is None) == (resume_dir is None):
        fail_usage("give a SUITE_FILE to run, or --resume RUN_DIR to finish a run (not both)")
    recorded = ("data_dir", "limit_train", "limit_eval", "cache_dir")
    if resume_dir is not None and (run_id or any(overrides[name] for name in recorded)):
        fail_usage("--resume uses the run's recorded --data-dir, --limit-*, --run-id and --cache-dir; leave them out")
    reporter = Reporter(enabled=progress)
    try:
        if resume_dir:
            suite_run = resume_run(resume_dir, reporter, **{k: v for k, v in overrides.items() if k not in recorded})
        else:
            suite_run = start_run(suite_file, reporter, results_dir=results_dir, run_id=run_id, **overrides)
    except UsageError as exc:
        fail_usage(str(exc))
    try:
        summary = suite_run.execute()
    except UsageError as exc:
        fail_usage(str(exc))
    except KeyboardInterrupt:
        click.echo(f"compbench: interrupted; every finished row is in {suite_run.run_dir / 'results.jsonl'}; "
                   f"finish the run with: compbench run --resume {suite_run.run_dir}", err=True)
        sys.exit(130)
    sys.exit(EXIT_FAILED_CELLS if summary.failed or summary.stopped_early else EXIT_OK)


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cells", "show_cells", is_flag=True, help="Also list every cell.")
def validate(suite_file: Path, show_cells: bool) -> None:
    """Check SUITE_FILE without running it; count its cells per task and pipeline."""
    from compbench.config.cells import expand
    from compbench.config.loading import load_suite
    from compbench.tasks.files import FileTaskConfig, resolve_file_task

    with usage_errors():
        suite = load_suite(suite_file)
        for entry in suite.tasks:       # a task from files: its files read, its columns and labels checked
            if isinstance(entry, FileTaskConfig):
                resolve_file_task(entry, suite.resolve_path("."), seed=suite.data.seed)
    cells = expand(suite)
    click.echo(f"{suite_file}: ok, {len(cells)} cells: {len(suite.task_names)} tasks x {len(suite.pipelines)} "
               f"pipelines ({', '.join(p.name for p in suite.pipelines)}) on their backends")
    for cell in cells if show_cells else []:
        click.echo(f"  {cell.cell_id}")


@main.command(name="list")
def list_components() -> None:
    """Show registered compressors and backends, and whether each backend can run here."""
    from compbench.common.plugins import BACKENDS, COMPRESSORS

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
    from compbench.common.plugins import BACKENDS
    from compbench.config.backends import BackendOptions

    try:
        availability = BACKENDS.get(name)().availability(BackendOptions(name=name, device=device))
    except Exception as exc:  # a plugin's bug must not hide the rest of the list
        return f"broken: {type(exc).__name__}: {exc}"
    return "available" if availability.ok else f"unavailable: {availability.reason}"


FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown",
                             show_default=True, help="What to print on stdout.")


def _run_dir(run_dir: Path) -> Path:
    if not (run_dir / "results.jsonl").is_file():
        fail_usage(f"{run_dir} has no results.jsonl; pass a run folder such as results/quick-20260101-120000")
    return run_dir


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@FORMAT_OPTION
@click.option(
    "--reference",
    metavar="PIPELINE",
    help="Also give every model's paired metric delta against this pipeline (e.g. a hard-label student).",
)
def report(run_dir: Path, fmt: str, reference: str | None) -> None:
    """Rebuild results.csv, report.md and plots/ of RUN_DIR from its results.jsonl, and print the report."""
    from compbench.results.report import RunReport

    with usage_errors():    # a results.jsonl line that is not a row
        built = RunReport.from_run_dir(_run_dir(run_dir), reference)
    if reference and reference not in built.pipelines:
        fail_usage(f"--reference {reference}: no such pipeline in {run_dir / 'results.jsonl'}; "
                   f"valid: {', '.join(built.pipelines)}")
    built.write(run_dir)
    click.echo(f"compbench: wrote {run_dir / 'report.md'}, {run_dir / 'results.csv'} and {run_dir / 'plots'}", err=True)
    click.echo(built.render(fmt), nl=False)


@main.command()
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@FORMAT_OPTION
def compare(run_a: Path, run_b: Path, fmt: str) -> None:
    """For measurements in both RUN_A and RUN_B: the change in metric, latency and size, flagged beyond the noise."""
    from compbench.results.compare import RunComparison

    with usage_errors():
        comparison = RunComparison.from_run_dirs(_run_dir(run_a), _run_dir(run_b))
    click.echo(comparison.render(fmt), nl=False)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-drop", required=True, help="The largest metric drop against the teacher: points (1pt) or a "
                                                "percentage of its metric (2%; perplexity needs one).")
@click.option("--objective", type=click.Choice(["latency", "size", "decode"]),
              help="What 'best' minimises: latency (default), as the speed-up measured against the teacher on the "
                   "suite's reference backend; deployed size; or a causal LM's generate() time, likewise measured "
                   "(default for causal LMs).")
@click.option("--backend", help="Only this backend (its label in the rows, or its name).")
@click.option("--batch", type=click.IntRange(min=1), help="The shape's batch size (default: the smallest measured).")
@click.option("--seq", type=SeqLength(), help="The shape's sequence length, or natural (default: the smallest "
                                              "fixed one).")
@click.option("--confident", is_flag=True, help="Bound the end of the delta's 95% interval, not its estimate.")
@click.option("--against", help="The reference backend the speed-ups are read against: accepted when it names the "
                                "run's (its suite's reference_backend, e.g. torch); another is refused, since it "
                                "would take a ratio of medians of separate cells.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--include-busy", is_flag=True, help="Also rank rows timed while other processes kept the machine busy "
              "(their speed-ups may be off; left out by default).")
def recommend(run_dir: Path, max_drop: str, objective: str | None, backend: str | None, batch: int | None,
              seq: int | str | None, confident: bool, against: str | None, fmt: str, include_busy: bool) -> None:
    """The cheapest model of RUN_DIR whose metric stays within --max-drop of the teacher's, per task, and the
    Pareto front of the others within it (from results.jsonl alone). Exit 1 if no model is within the bound."""
    import json

    from compbench.results.recommend import MaxDrop, as_records, candidates, render
    from compbench.results.rows import read_rows

    with usage_errors():
        bound = MaxDrop.parse(max_drop)
        found = candidates(read_rows(_run_dir(run_dir) / "results.jsonl"), bound, objective=objective,
                           backend=backend, batch=batch, seq=seq, confident=confident, against=against,
                           include_busy=include_busy)
    if not found:
        fail_usage(f"{run_dir / 'results.jsonl'} has no ok rows to recommend from")
    click.echo(json.dumps(as_records(found), indent=2) + "\n" if fmt == "json" else render(found, bound, confident),
               nl=False)
    if any(result["best"] is None for result in found.values()):
        sys.exit(1)


@main.group()
def cache() -> None:
    """Inspect or clear the cache of built models and measured cells."""


def _cache_root(cache_dir: str | None) -> Path:
    from compbench.config.settings import default_cache_dir

    root = default_cache_dir(None, cache_dir)
    if not root.is_dir():
        fail_usage(f"cache folder {root} does not exist; pass --cache-dir or set COMPBENCH_CACHE_DIR")
    return root


@cache.command(name="ls")
@click.option("--cache-dir", help="The cache folder (default: COMPBENCH_CACHE_DIR or ~/.cache/compbench).")
def cache_ls(cache_dir: str | None) -> None:
    """List cached models (newest use first) and count cached cell results."""
    from compbench.cache.admin import listing

    for line in listing(_cache_root(cache_dir)):
        click.echo(line)


@cache.command(name="prune")
@click.option("--cache-dir", help="The cache folder (default: COMPBENCH_CACHE_DIR or ~/.cache/compbench).")
@click.option("--older-than", type=click.FloatRange(min=0), help="Also remove entries not used for this many days.")
@click.option("--all", "everything", is_flag=True, help="Remove everything in the cache.")
@click.option("--dry-run", is_flag=True, help="Only list what would go.")
def cache_prune(cache_dir: str | None, older_than: float | None, everything: bool, dry_run: bool) -> None:
    """Remove unfinished builds left by killed runs, and with --older-than or --all, more."""
    from compbench.cache.admin import human_bytes, prune

    removed = prune(_cache_root(cache_dir), older_than, everything, dry_run)
    for entry in removed:
        click.echo(
            f"  {'would remove' if dry_run else 'removed'} {entry.kind} {entry.path} ({human_bytes(entry.bytes)})"
        )
    click.echo(
        f"{'would free' if dry_run else 'freed'} {human_bytes(sum(e.bytes for e in removed))} in {len(removed)} entries"
    )


if __name__ == "__main__":
    main()
