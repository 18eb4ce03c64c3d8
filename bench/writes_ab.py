"""Writes before and after issue 16 (acceptance 4), in one run: `make bench-writes`.

Issue 16's acceptance 4: "the referral create in `make bench` within 10% of its throughput
before this change (same run conditions), and the case-event batch within 10%". On this machine
the cores' speed drifts by up to 2x over hours, so two runs at different times prove nothing:
this benchmark serves each variant in turn from the same PostgreSQL, in alternating rounds, and
judges the medians.

**"Before" is 9c4d27c** (`--before`), the first parent of 58289ed "Merge wt-perf", main as it
was just before the first of issue 16's work reached it. Issue 16 touched the write path twice:
wt-perf (merged at 58289ed) moved the re-referral rule the create runs into one SQL function,
`neglect_rereferral_counts` (migration 0015), and set-based relinking; wt-rollup (merged at
8ed5764) put a statement trigger, `neglect_note_indicator_change` (service/indicators/rollup.sql,
migration 0017), on the 9 tables the indicators read, noting each writing transaction once in
`indicator_change`. A commit between the two merges (d1af9bb) would leave 0015 out of the
comparison, so the earliest is the honest one. Between 9c4d27c and now the write path also took
two changes of issue 12 (webhooks) that make the create cheaper: the outbox's foreign keys
dropped and the audit event last in the create (72fd4bf, migration 0016), and the fan-out to
subscriptions moved from the create to the workers (3a3be4a, migration 0018). They would hide
a cost of issue 16 in the "before"/"now" ratio, so a third variant, **now-untracked**, is the
current code on a database whose `indicator_change_noted` triggers were dropped after the
migration: the ratio now/now-untracked is what the rollup's triggers cost on today's code, with
nothing else changed. (Migration 0015's part cannot be taken out of today's code that way; its
own A/B ran on wt-perf, commits 07d1d90 and 3473772.)

How: the "before" tree is `git archive --before` unpacked in a temporary folder (nothing is
registered in the repository, so an interrupted run leaves nothing behind); "now" is this
checkout (or `git archive --now`). Each variant gets a fresh database on the same server
(DATABASE_URL, else 127.0.0.1:5432, else the embedded server: `bench.harness.find_server_url`),
migrated by its own tree's `neglect-service migrate`, with its own clients (`clients create`: a
school with `referrals:write`, a local authority with `case-events:write`), and is served by its
own tree's `neglect-service serve --workers 2` (this venv's python, the tree first on
PYTHONPATH; the dependencies are the same: the lock files did not change since 9c4d27c). Every
variant then gets the same data: `--seed` referrals for the same NHS numbers through its own
referral create (8 at a time), then ANALYZE.

The rounds: one server runs at a time (the others are stopped). In each round every variant's
server is started and, after a token, runs (a) **the referral create**: wrk `-t2 -c32` with
bench/referrals.lua and the bodies `make bench` uses, a `--warmup` then `--duration` s, then (b)
**the case-event batch**: wrk `-t2 -c4` (`--batch-connections`) with bench/case_events.lua, POST
/v1/case-events of `--batch-size` events (11: a Section 47 enquiry and its ICPC, a CIN plan's
start and end, an early help assessment and a step-up, a missed appointment and feedback, each
pair for a seeded child; a CP plan's start, category change and end for a new child), again a
`--warmup` then `--duration` s; then it is stopped. Why 4 connections for the batches, not 32:
one client's batches queue on each other (its audit chain head is locked from a batch's audit
rows to its commit), so on this machine batches/s fell as connections rose (one shared run,
11 events a batch: 12-20/s at 2 connections, 9-16 at 8, 6 at 32 with p50 near 4 s, close to
wrk's timeout); 4 keeps both server processes and PostgreSQL busy without that queue being
most of what is measured. Round 0 is a
warm-up round, each load for `--warmup` s, not counted (a database's first minutes plan on small
tables). Then `--rounds` measured rounds; the order alternates (before, now, now, before, ...;
with three variants it reverses every round), so a drift falls on every variant alike. Every
phase of a database has its own slice of the 999 NHS range, so every referral is for a new child.

Reported per variant: the median requests/s of each load, its p50/p99 and the CPU per request of
the server's processes and of the PostgreSQL backends of its database (from /proc, as `make
bench`); the ratios now/before (the target: at least 0.90 for both loads) and now/now-untracked,
with each round's ratio to the other variant's nearest round. Any non-2xx answer, socket error
or rejected case event fails the run. Results are printed and saved to
bench/results/writes-<time>.json; the databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx

from bench.harness import (
    NHS_PLACEHOLDER,
    REFERENCE_PLACEHOLDER,
    attach_cpu,
    create_database,
    drop_database,
    fetch_token,
    find_server_url,
    free_port,
    make_body_templates,
    measure_load,
    parse_wrk_output,
    wait_until_ready,
)
from schemas.identifiers import compute_nhs_check_digit

ROOT: Final = Path(__file__).resolve().parent.parent
BEFORE: Final = "9c4d27c8474fb111e921de2b86d6e7d04c87493a"
"""The first parent of 58289ed "Merge wt-perf": main before issue 16's first merge."""
RATIO_TARGET: Final = 0.90
THREADS: Final = 2
CONNECTIONS: Final = 32
TRIGGER: Final = "indicator_change_noted"
LOADS: Final = ("referral_create", "case_event_batch")
VARIANTS: Final = ("before", "now", "now-untracked")
_CLI: Final = "import sys; from service.cli.main import app; sys.exit(app())"


@dataclass
class Variant:
    """One side of the comparison: a source tree and its own database."""

    name: str
    tree: Path
    revision: str
    database: str = ""
    url: str = ""
    drop_triggers: bool = False
    clients: dict[str, str] = field(default_factory=dict)
    """`school` and `la`: each a client's `clients create --json` output."""
    phase: int = 0
    """The next load phase of this database (its slice of the 999 range)."""

    def env(self, key: str) -> dict[str, str]:
        environment = {
            **os.environ,
            "DATABASE_URL": self.url,
            "NEGLECT_ENV": "production",
            "NEGLECT_KEY_ENCRYPTION_KEY": key,
            "PYTHONPATH": str(self.tree),
        }
        environment.pop("NEGLECT_OWNER_DATABASE_URL", None)
        return environment

    def cli(self, key: str, *arguments: str) -> str:
        """Run this tree's `neglect-service ARGUMENTS`; its standard output."""
        done = subprocess.run(
            [sys.executable, "-c", _CLI, *arguments],
            cwd=self.tree,
            env=self.env(key),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"{self.name}: neglect-service {' '.join(arguments)} failed:\n{done.stderr[-3000:]}"
            )
        return done.stdout


def export_tree(revision: str, into: Path) -> tuple[Path, str]:
    """`git archive` of `revision` unpacked in `into`; the folder and the full commit hash."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = into.with_suffix(".tar")
    subprocess.run(["git", "archive", "-o", str(archive), commit], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return into, commit


def checkout_revision() -> str:
    """HEAD of this checkout, marked `+changes` when the tree differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return head + ("+changes" if dirty else "")


def check_imports(variant: Variant, key: str) -> None:
    """The variant's code is what its processes import (not this checkout's editable install)."""
    done = subprocess.run(
        [sys.executable, "-c", "import api, service, schemas; print(service.__file__)"],
        cwd=variant.tree,
        env=variant.env(key),
        capture_output=True,
        text=True,
        check=True,
    )
    imported = Path(done.stdout.strip()).resolve()
    if not imported.is_relative_to(variant.tree.resolve()):
        raise SystemExit(f"{variant.name}: imports service from {imported}, not {variant.tree}")


async def prepare_database(variant: Variant, server: str, key: str, run_id: str) -> None:
    variant.database = f"ns_bench_wr_{run_id}_{variant.name.replace('-', '_')}"
    variant.url = await create_database(server, variant.database)
    await asyncio.to_thread(variant.cli, key, "migrate")
    if variant.drop_triggers:
        connection = await asyncpg.connect(variant.url)
        try:
            tables = await connection.fetch(
                "SELECT tgrelid::regclass::text AS name FROM pg_trigger WHERE tgname = $1", TRIGGER
            )
            if not tables:
                raise SystemExit(f"{variant.name}: no {TRIGGER} trigger to drop in {variant.tree}")
            for table in tables:
                await connection.execute(f"DROP TRIGGER {TRIGGER} ON {table['name']}")
        finally:
            await connection.close()
    for role, agency_type, agency_name, scopes in (
        ("school", "school", "Sampletown Primary School", "referrals:write"),
        ("la", "la", "Sampletown Children's Services", "case-events:write"),
    ):
        variant.clients[role] = await asyncio.to_thread(
            variant.cli,
            key,
            "clients",
            "create",
            "--json",
            "--name",
            f"Benchmark {role}",
            "--agency-type",
            agency_type,
            "--agency-name",
            agency_name,
            "--scopes",
            scopes,
        )


def seed_nhs_numbers(count: int, limit: int) -> list[str]:
    """The first `count` valid NHS numbers of the 999 range, from 9990000000 up to `limit`."""
    numbers: list[str] = []
    serial = 0
    while len(numbers) < count:
        if serial >= limit:
            raise SystemExit(f"--seed {count} does not fit in the seed's slice of the 999 range")
        first_nine = f"999{serial:06d}"
        serial += 1
        check = compute_nhs_check_digit(first_nine)
        if check is not None:
            numbers.append(first_nine + str(check))
    return numbers


class Server:
    """One variant's `neglect-service serve --workers 2`, in a process group of its own."""

    def __init__(self, variant: Variant, key: str, log: Path) -> None:
        self.variant = variant
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CLI, "serve", "--workers", "2", "--port", str(self.port)],
            cwd=variant.tree,
            env=variant.env(key),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> dict[str, str]:
        """Wait until it answers; a token for each client."""
        wait_until_ready(f"{self.base}/health/ready", self.process.pid, 180)
        return {
            role: fetch_token(self.base, client) for role, client in self.variant.clients.items()
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


async def seed(base: str, token: str, numbers: list[str], templates: list[str]) -> None:
    """One referral for each NHS number, through the variant's own create, 8 at a time."""
    pending = iter(enumerate(numbers))
    failures: list[str] = []

    async def sender(client: httpx.AsyncClient) -> None:
        for index, nhs in pending:
            reference = f"SEED-{index}"
            body = (
                templates[index % len(templates)]
                .replace(NHS_PLACEHOLDER, nhs)
                .replace(REFERENCE_PLACEHOLDER, reference)
            )
            response = await client.post(
                "/v1/referrals",
                content=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"seed-{index}",
                },
            )
            if response.status_code != 201:
                failures.append(f"HTTP {response.status_code} {response.text[:300]}")

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(sender(client) for _ in range(8)))
    if failures:
        raise SystemExit(f"seeding failed ({len(failures)} referrals): {failures[0]}")


@dataclass
class Bench:
    """What every load of the run shares."""

    work: Path
    key: str
    run_id: str
    phases: int
    """Load phases per database: each its own slice of the 999 range."""
    bodies: Path
    """Referral bodies with placeholders (`bench.harness.make_body_templates`), one a line."""
    seeded: Path
    """The seeded children's NHS numbers, one a line."""
    duration: float
    warmup: float
    batch_size: int
    batch_connections: int


def run_load(
    bench: Bench, variant: Variant, server: Server, load: str, token: str, seconds: float, out: Path
) -> dict[str, Any]:
    """One wrk run of `load` against the variant's server, at saturation; its figures."""
    phase = variant.phase
    variant.phase += 1
    common = [str(phase), bench.run_id, str(THREADS), str(bench.phases)]
    if load == "referral_create":
        script, path, connections, timeout = "referrals.lua", "/v1/referrals", CONNECTIONS, 10
        script_args = [str(bench.bodies), *common]
    else:
        script, path = "case_events.lua", "/v1/case-events"
        connections, timeout = bench.batch_connections, 30
        script_args = [str(bench.seeded), *common, str(bench.batch_size)]
    measure_load(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            f"{timeout}s",
            "-H",
            f"Authorization: Bearer {token}",
            "-s",
            str(ROOT / "bench" / script),
            server.base + path,
            "--",
            *script_args,
        ],
        server.process.pid,
        variant.database,
        out,
    )
    figures = parse_wrk_output(out.read_text())
    attach_cpu(figures, out)
    return summary(figures, load)


async def serve_round(variant: Variant, number: int, bench: Bench) -> dict[str, Any]:
    """Round `number` of one variant: its server started, each load run (after a warm-up of
    `bench.warmup` s unless this is the warm-up round, where the run itself is that long), the
    server stopped."""
    warm_up = number == 0
    record: dict[str, Any] = {"round": number, "warm_up": warm_up, "variant": variant.name}
    server = Server(variant, bench.key, bench.work / f"{variant.name}.log")
    try:
        tokens = await asyncio.to_thread(server.ready)
        for load in LOADS:
            token = tokens["school" if load == "referral_create" else "la"]
            stem = bench.work / f"{variant.name}-{number}-{load}"
            if not warm_up:
                await asyncio.to_thread(
                    run_load,
                    bench,
                    variant,
                    server,
                    load,
                    token,
                    bench.warmup,
                    stem.with_suffix(".warmup.txt"),
                )
            record[load] = await asyncio.to_thread(
                run_load,
                bench,
                variant,
                server,
                load,
                token,
                bench.warmup if warm_up else bench.duration,
                stem.with_suffix(".txt"),
            )
    finally:
        server.stop()
    return record


def summary(figures: dict[str, Any], load: str) -> dict[str, Any]:
    cpu = figures.get("cpu_ms_per_request", {})
    kept: dict[str, Any] = {
        "requests": figures["requests"],
        "requests_per_s": round(figures["requests_per_s"], 1),
        "p50_ms": round(figures["p50_ms"], 2),
        "p99_ms": round(figures["p99_ms"], 2),
        "non_2xx": figures["non_2xx"],
        "socket_errors": figures["socket_errors"],
        "cpu_ms_per_request": {
            "app": round(cpu.get("server", 0.0), 3),
            "postgres": round(cpu.get("postgres", 0.0), 3),
        },
        "other_load": round(figures.get("other_load", 0.0), 2),
        "sample_failure": figures["sample_failure"],
    }
    if load == "case_event_batch":
        kept["batch_size"] = figures["batch_size"]
        kept["events_stored"] = figures["events_stored"]
        kept["events_rejected"] = figures["events_rejected"] + figures["events_duplicate"]
        seconds = figures["duration_us"] / 1e6
        kept["events_per_s"] = round(figures["events_stored"] / seconds, 1) if seconds else 0.0
    return kept


def round_order(names: list[str], index: int) -> list[str]:
    """Round `index`'s order: as given in even rounds, reversed in odd ones (A B, B A, A B...)."""
    return names if index % 2 == 0 else names[::-1]


def judge(
    rounds: list[dict[str, Any]], names: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Medians per variant and load, the ratios, and the verdicts."""
    measured = [r for r in rounds if not r["warm_up"]]
    medians: dict[str, Any] = {}
    for name in names:
        mine = [r for r in measured if r["variant"] == name]
        medians[name] = {}
        for load in LOADS:
            runs = [r[load] for r in mine]
            medians[name][load] = {
                "requests_per_s": statistics.median(run["requests_per_s"] for run in runs),
                "rounds": [run["requests_per_s"] for run in runs],
                "p50_ms": statistics.median(run["p50_ms"] for run in runs),
                "p99_ms": statistics.median(run["p99_ms"] for run in runs),
                "cpu_ms_per_request": {
                    side: round(
                        statistics.median(run["cpu_ms_per_request"][side] for run in runs), 3
                    )
                    for side in ("app", "postgres")
                },
            }
            if load == "case_event_batch":
                medians[name][load]["events_per_s"] = statistics.median(
                    run["events_per_s"] for run in runs
                )
    comparisons: list[dict[str, Any]] = []
    for new, old, judged in (("now", "before", True), ("now", "now-untracked", False)):
        if new not in names or old not in names:
            continue
        for load in LOADS:
            old_rate = medians[old][load]["requests_per_s"]
            ratio = medians[new][load]["requests_per_s"] / old_rate if old_rate else 0.0
            cpu_new, cpu_old = (
                sum(medians[name][load]["cpu_ms_per_request"].values()) for name in (new, old)
            )
            comparisons.append(
                {
                    "load": load,
                    "ratio": f"{new}/{old}",
                    "value": round(ratio, 3),
                    "pair_ratios": pair_ratios(measured, new, old, load),
                    "cpu_ratio": round(cpu_new / cpu_old, 3) if cpu_old else None,
                    "target": f">= {RATIO_TARGET:.2f}" if judged else "reported",
                    "met": ratio >= RATIO_TARGET if judged else None,
                }
            )
    return medians, comparisons


def pair_ratios(measured: list[dict[str, Any]], new: str, old: str, load: str) -> list[float]:
    """Per round, `new`'s requests/s over `old`'s in the same round (closer in time than the
    medians)."""
    ratios = []
    for number in sorted({r["round"] for r in measured}):
        pair = {r["variant"]: r[load] for r in measured if r["round"] == number}
        if new in pair and old in pair:
            old_rate = pair[old]["requests_per_s"]
            ratios.append(round(pair[new]["requests_per_s"] / old_rate, 3) if old_rate else 0.0)
    return ratios


def failures(rounds: list[dict[str, Any]]) -> list[str]:
    found = []
    for r in rounds:
        for load in LOADS:
            run = r[load]
            bad = run["non_2xx"] + run["socket_errors"] + run.get("events_rejected", 0)
            if bad:
                found.append(
                    f"round {r['round']} {r['variant']} {load}: {run['non_2xx']} non-2xx,"
                    f" {run['socket_errors']} socket errors, {run.get('events_rejected', 0)}"
                    f" rejected or duplicate events; {run['sample_failure']}"
                )
    return found


async def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/writes_ab.py needs wrk: `make wrk` installs it")
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    if not names or any(name not in VARIANTS for name in names) or len(set(names)) != len(names):
        raise SystemExit(f"--variants: a comma-separated list from {', '.join(VARIANTS)}")
    server_url = await asyncio.to_thread(find_server_url)
    key = base64.b64encode(os.urandom(32)).decode()
    run_id = f"{int(time.time())}_{os.getpid()}"
    # Per database: the seed's slice, then two phases in the warm-up round and four in each
    # measured round (a warm-up and a measured run of each load).
    phases = 1 + 2 + 4 * args.rounds
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ns-bench-writes-") as temporary:
        work = Path(temporary)
        trees: dict[str, tuple[Path, str]] = {}
        if "before" in names:
            trees["before"] = export_tree(args.before, work / "before")
        if {"now", "now-untracked"} & set(names):
            trees["now"] = (
                export_tree(args.now, work / "now") if args.now else (ROOT, checkout_revision())
            )
        variants = [
            Variant(
                name=name,
                tree=trees["before" if name == "before" else "now"][0],
                revision=trees["before" if name == "before" else "now"][1],
                drop_triggers=name == "now-untracked",
            )
            for name in names
        ]
        bench = Bench(
            work=work,
            key=key,
            run_id=run_id,
            phases=phases,
            bodies=work / "bodies.jsonl",
            seeded=work / "seeded.txt",
            duration=args.duration,
            warmup=args.warmup,
            batch_size=args.batch_size,
            batch_connections=args.batch_connections,
        )
        templates = make_body_templates(100)
        bench.bodies.write_text("\n".join(templates) + "\n")
        slice_size = 1_000_000 // (phases * THREADS)
        numbers = seed_nhs_numbers(args.seed, THREADS * slice_size)
        bench.seeded.write_text("\n".join(numbers) + "\n")
        rounds: list[dict[str, Any]] = []
        try:
            for variant in variants:
                check_imports(variant, key)
                print(
                    f"writes bench: {variant.name}: {variant.revision} migrating", file=sys.stderr
                )
                await prepare_database(variant, server_url, key, run_id)
            for variant in variants:
                print(
                    f"writes bench: {variant.name}: seeding {args.seed} referrals", file=sys.stderr
                )
                server = Server(variant, key, work / f"{variant.name}.log")
                try:
                    tokens = await asyncio.to_thread(server.ready)
                    await seed(server.base, tokens["school"], numbers, templates)
                finally:
                    server.stop()
                variant.phase = 1
                connection = await asyncpg.connect(variant.url)
                try:
                    await connection.execute("ANALYZE")
                finally:
                    await connection.close()
            for number in range(args.rounds + 1):
                for name in round_order(names, number):
                    [variant] = [v for v in variants if v.name == name]
                    record = await serve_round(variant, number, bench)
                    rounds.append(record)
                    print(f"  {progress_line(record)}", file=sys.stderr)
            logged = {
                variant.name: (work / f"{variant.name}.log").read_text(errors="replace")
                for variant in variants
            }
        finally:
            for variant in variants:
                if variant.database:
                    await drop_database(server_url, variant.database)
    errors = failures(rounds)
    for name, text in logged.items():
        if "Traceback" in text:
            errors.append(f"{name}: the service logged a traceback: {text[-1500:]}")
    medians, comparisons = judge(rounds, names)
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "variants": {
            v.name: {"revision": v.revision, "indicator_triggers_dropped": v.drop_triggers}
            for v in variants
        },
        "settings": {
            "wrk_referral_create": f"-t{THREADS} -c{CONNECTIONS}",
            "wrk_case_event_batch": f"-t{THREADS} -c{args.batch_connections}",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "seed_referrals": args.seed,
            "batch_size": args.batch_size,
            "server": "neglect-service serve --workers 2",
        },
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rounds": rounds,
        "medians": medians,
        "comparisons": comparisons,
        "errors": errors,
        "passed": not errors and all(c["met"] is not False for c in comparisons),
    }
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    saved = results / f"writes-{stamp}.json"
    saved.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result, names), end="")
    print(f"saved {saved.relative_to(ROOT)}")
    return 0 if result["passed"] else 1


def _cpu(figures: dict[str, Any]) -> str:
    cpu = figures["cpu_ms_per_request"]
    return f"CPU {cpu['app']:.2f} + {cpu['postgres']:.2f} ms"


def progress_line(record: dict[str, Any]) -> str:
    create, batch = record["referral_create"], record["case_event_batch"]
    return (
        f"round {record['round']}{' (warm-up)' if record['warm_up'] else ''} {record['variant']}:"
        f" create {create['requests_per_s']:.0f}/s ({_cpu(create)}),"
        f" batch {batch['requests_per_s']:.1f}/s = {batch['events_per_s']:.0f} events/s"
        f" ({_cpu(batch)})"
    )


def report(result: dict[str, Any], names: list[str]) -> str:
    medians = result["medians"]
    settings = result["settings"]
    lines = [
        "",
        f"writes before and after issue 16: {settings['duration_s']:g} s a load,"
        f" {settings['rounds']} alternating round{'s' if settings['rounds'] > 1 else ''} after"
        " a warm-up round;"
        f" {settings['seed_referrals']} seeded referrals; creates: wrk"
        f" {settings['wrk_referral_create']}; batches of {settings['batch_size']} case events:"
        f" wrk {settings['wrk_case_event_batch']}",
    ]
    for name in names:
        variant = result["variants"][name]
        lines.append(
            f"  {name}: {variant['revision']}"
            + (" (indicator triggers dropped)" if variant["indicator_triggers_dropped"] else "")
        )
    lines.append(
        f"{'':<32}{'requests/s':>11}{'rounds':>22}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'app CPU':>9}{'PG CPU':>8}"
    )
    for load, label in (("referral_create", "POST /v1/referrals"), ("case_event_batch", "batch")):
        for name in names:
            figures = medians[name][load]
            rounds = ", ".join(f"{each:.0f}" for each in figures["rounds"])
            lines.append(
                f"{label + ' ' + name:<32}{figures['requests_per_s']:>11.1f}{rounds:>22}"
                f"{figures['p50_ms']:>8.1f}{figures['p99_ms']:>8.1f}"
                f"{figures['cpu_ms_per_request']['app']:>9.2f}"
                f"{figures['cpu_ms_per_request']['postgres']:>8.2f}"
            )
    lines.append(
        "medians of the measured rounds; app CPU, PG CPU: CPU ms per request of the server's"
        " processes and of the PostgreSQL backends of the variant's database"
    )
    for comparison in result["comparisons"]:
        verdict = (
            "reported"
            if comparison["met"] is None
            else ("MET" if comparison["met"] else "MISSED") + f" (target {comparison['target']})"
        )
        lines.append(
            f"{comparison['load']}: {comparison['ratio']} {comparison['value']:.3f}"
            f" (per round: {', '.join(f'{r:.3f}' for r in comparison['pair_ratios'])});"
            f" CPU per request {comparison['ratio']} {comparison['cpu_ratio']}: {verdict}"
        )
    for error in result["errors"]:
        lines.append(f"ERROR: {error}")
    noisy = [
        f"round {r['round']} {r['variant']} {load} {r[load]['other_load']:.0%}"
        for r in result["rounds"]
        for load in LOADS
        if not r["warm_up"] and r[load]["other_load"] > 0.10
    ]
    if noisy:
        lines.append(
            "WARNING: other processes used over 10% of the machine in: "
            + "; ".join(noisy)
            + " (the requests/s are noisy; the CPU per request less so, though not unmoved)"
        )
    lines.append("PASSED" if result["passed"] else "FAILED")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="the commit before issue 16")
    parser.add_argument(
        "--now", default="", help="a commit to compare instead of this checkout as it stands"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}",
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of each variant")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of wrk a load")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of wrk before each measured run"
    )
    parser.add_argument(
        "--seed", type=int, default=2000, help="referrals seeded first (the batches' children)"
    )
    parser.add_argument("--batch-size", type=int, default=11, help="case events a request")
    parser.add_argument(
        "--batch-connections",
        type=int,
        default=4,
        help="wrk connections posting batches (at least 2: one a wrk thread)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.duration <= 0 or args.warmup <= 0 or args.seed < THREADS:
        raise SystemExit("--rounds >= 1, --duration > 0, --warmup > 0, --seed >= 2")
    if not 1 <= args.batch_size <= 1000:
        raise SystemExit("--batch-size: 1 to 1,000 events")
    if args.batch_connections < THREADS:
        raise SystemExit(f"--batch-connections: at least {THREADS}")
    if args.seed < 4 * args.batch_size * args.batch_connections:
        # Each wrk thread walks its share of the seeded children in order: with this many, the
        # batches in flight at once never name the same child (nor wait on its lock).
        raise SystemExit("--seed: at least 4 x --batch-size x --batch-connections")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
