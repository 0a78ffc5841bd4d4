"""Resume machinery of the extraction stages: config-keyed stage folders, and LLM passes that skip what an
interrupted run already wrote.

Each stage writes Parquet under ``<output_dir>/stages/<name>/`` with a ``_DONE.json`` marker and the fingerprint
of the config it was made under (``_CONFIG_KEY``). A finished stage with the same key is reused; an LLM stage
(resumable) keeps the rows of an interrupted run and only sends the others, and never mixes in rows made under
another key.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wildreward import ray_compat as rc
from wildreward.extract.backends import UNAVAILABLE
from wildreward.extract.config import AnnotatorConfig
from wildreward.extract.udfs import drop_ids
from wildreward.logs import stage_logger
from wildreward.storage import Location, read_table

log = stage_logger("extract")


def fingerprint(*parts) -> str:
    """Short hash of the config parts a stage's output depends on (upstream keys included)."""
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_stage(out: Location, name: str, key: str, build: Callable[[Location], dict], resumable: bool = False) -> dict:
    """Run ``build`` into ``stages/<name>`` unless a finished run with the same config ``key`` is there.

    Resumable (LLM) stages keep a partial output written under the same key and refuse to mix in rows made
    under another one: paid-for annotations are never deleted behind the user's back.
    """
    stage_dir = out / "stages" / name
    marker, key_file = stage_dir / "_DONE.json", stage_dir / "_CONFIG_KEY"
    same = key_file.exists() and key_file.read_text() == key
    if marker.exists() and same:
        log(f"stage {name}: already done, reusing {stage_dir}")
        return json.loads(marker.read_text())
    if stage_dir.exists():
        if resumable and not same and any(stage_dir.glob("*.parquet")):
            raise RuntimeError(f"{stage_dir} holds output made with a different config; use another output_dir "
                               f"or delete that folder to redo stage {name}")
        if not resumable or not same:
            stage_dir.rmtree()
    stage_dir.mkdir()
    key_file.write_text(key)
    log(f"stage {name}: running")
    start = time.time()
    stats = build(stage_dir)
    stats["seconds"] = round(time.time() - start, 1)
    stats["started_at"] = round(start, 1)  # epoch seconds: lines stages up with outside traces (memory, load)
    marker.write_text(json.dumps(stats, indent=2))
    log(f"stage {name}: done in {stats['seconds']} s")
    return stats


def written_ids(stage_dir: Location) -> pa.Array:
    """Ids already written by an interrupted run; files cut off mid-write are deleted (their rows redo)."""
    ids = []
    for path in stage_dir.glob("*.parquet"):
        try:
            ids.append(pq.read_table(path.path, columns=["id"], filesystem=path.fs)["id"])
        except (pa.ArrowInvalid, OSError):
            log(f"removing unreadable partial file {path.name}")
            path.unlink()
    return pa.concat_arrays([c.combine_chunks() for c in ids]) if ids else pa.array([], pa.string())


def unavailable(errors) -> pa.Array:
    """Mask of the error strings that mark a row whose backend stayed unreachable (retried by the next run)."""
    return pc.fill_null(pc.starts_with(errors.cast(pa.string()), UNAVAILABLE), False)


def drop_unavailable(stage_dir: Location, column: str) -> int:
    """Take the rows whose backend was unreachable out of an earlier run's files, so that resuming retries them.
    Files are rewritten in place: one cut off by a crash is removed by ``written_ids`` and its rows are redone."""
    dropped = 0
    for path in stage_dir.glob("*.parquet"):
        try:
            failed = unavailable(pq.read_table(path.path, columns=[column], filesystem=path.fs)[column])
        except (pa.ArrowInvalid, OSError):
            continue  # a partial file: written_ids removes it
        n = pc.sum(failed).as_py() or 0
        if n:
            table = pq.read_table(path.path, filesystem=path.fs).filter(pc.invert(failed))
            if table.num_rows:
                pq.write_table(table, path.path, filesystem=path.fs)
            else:
                path.unlink()
            dropped += n
    return dropped


def run_llm_stage(ds, stage_dir: Location, udf: type, cfg: AnnotatorConfig, error_column: str) -> int:
    """Resume-aware actor-pool pass: skip ids already in ``stage_dir``, append the rest. Returns rows redone.

    Rows whose backend stayed unreachable are retried by the next run. When more than
    ``cfg.max_unavailable_rate`` of the rows end that way (an endpoint down mid-run), the stage fails rather than
    finishing: a finished stage would keep them as errors for good."""
    retried = drop_unavailable(stage_dir, error_column)
    if retried:
        log(f"retrying {retried} rows whose backend was unavailable in the earlier run")
    done = written_ids(stage_dir)
    if len(done):
        log(f"resuming: {len(done)} rows already written")
        ds = rc.map_tables(ds, drop_ids, ids=done)
    # An actor handles one batch at a time: an HTTP batch must hold several times the request concurrency or
    # request slots idle at every batch boundary.
    batch = max(cfg.batch_size, 4 * cfg.http.concurrency) if cfg.backend == "http" else cfg.batch_size
    # Small blocks = small output files = little work lost to a crash (one file is written per block).
    todo = rc.rechunk(ds, rows_per_block=8 * batch)
    n = todo.count()  # a streaming pass over text, no LLM; nothing left -> no LLM actors are started
    if n:
        rc.write_parquet(rc.map_with_actors(todo, udf, {"cfg": cfg}, batch_size=batch,
                                            min_actors=cfg.min_actors, max_actors=cfg.max_actors,
                                            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus), str(stage_dir))
    check_available(stage_dir, error_column, cfg)
    return n


def check_available(stage_dir: Location, error_column: str, cfg: AnnotatorConfig) -> None:
    errors = read_table(stage_dir, [error_column])[error_column]
    failed = pc.sum(unavailable(errors)).as_py() or 0
    if failed > cfg.max_unavailable_rate * len(errors):
        raise RuntimeError(f"{stage_dir.name}: {failed} of {len(errors)} rows got no answer from the annotator "
                           f"backend after {cfg.http.max_retries} retries (over max_unavailable_rate="
                           f"{cfg.max_unavailable_rate}); fix the endpoint and run again with the same output_dir: "
                           "only those rows are redone")


def check_unique(stage_dir: Location, expected: int, what: str) -> None:
    """Exactly ``expected`` rows, none twice: a resumed stage neither lost nor doubled a row."""
    ids = read_table(stage_dir, ["id"])["id"]
    unique = len(pc.unique(ids))
    if unique != len(ids) or len(ids) != expected:
        raise RuntimeError(f"{what}: {len(ids)} rows written, {unique} unique ids, {expected} expected")
