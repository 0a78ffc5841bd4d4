"""Streaming writes: output files appear while the input is still being read, even with every CPU taken.

A slow reader (one task, 1 CPU) feeds an actor pool (2 x 0.5 CPU) on a 2-CPU Ray: nothing is left for a write task
that asks for a CPU, and then every processed block waits in the object store until the read ends. The extraction
stages rely on the opposite: a block's rows are on disk soon after they are annotated (memory stays bounded, a crash
loses little).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wildreward import ray_compat as rc

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

# A read long enough that a slow actor-pool start on a loaded machine (~10 s) still leaves margin.
BLOCKS, SECONDS_PER_BLOCK = 24, 1.0


def slow_read(specs: pa.Table, marker: str):
    for i in range(BLOCKS):
        time.sleep(SECONDS_PER_BLOCK)
        yield pa.table({"id": [f"{i}_{j}" for j in range(10)], "x": list(range(10))})
    Path(marker).write_text(str(time.time()))


class Double:
    def __call__(self, table: pa.Table) -> pa.Table:
        return table.append_column("y", pa.array([2 * x for x in table["x"].to_pylist()]))


@pytest.fixture
def tiny_blocks():
    """Every yielded table its own block (by default small yields are merged up to 128 MiB, so this toy read
    would be one block, emitted at its end)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved, ctx.target_max_block_size = ctx.target_max_block_size, 1024
    yield
    ctx.target_max_block_size = saved


def test_blocks_are_written_while_the_read_still_runs(ray_local, tiny_blocks, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "read_done"
    ds = rc.map_tables(rc.from_items([{"task": 0}]), slow_read, marker=str(marker))
    ds = rc.map_with_actors(ds, Double, {}, batch_size=10, min_actors=2, max_actors=2, num_cpus=0.5)
    first_file: list[float] = []

    def watch():
        while not marker.exists():
            if out.exists() and any(out.glob("*.parquet")):
                first_file.append(time.time())
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rc.write_parquet(ds, str(out))
    watcher.join(timeout=5)
    read_done = float(marker.read_text())
    assert first_file, "no output file was written before the read finished"
    assert read_done - first_file[0] > 3 * SECONDS_PER_BLOCK, (read_done - first_file[0])
    rows = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])
    assert rows.num_rows == BLOCKS * 10 and sorted(rows["y"].to_pylist()) == sorted(2 * x for x in
                                                                                      list(range(10)) * BLOCKS)


def test_parquet_listing_uses_a_footer_pool_sized_to_the_cluster(ray_local, tmp_path):
    """Ray Data's default starts up to 32 footer-reading actors (a ~100 MB worker each) to list a Parquet dir; on
    2 CPUs the read gets one, and still reads every row."""
    import psutil

    for i in range(60):
        pq.write_table(pa.table({"x": list(range(i * 10, i * 10 + 10))}), tmp_path / f"part-{i:02d}.parquet")
    footer_pids: set[int] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "FooterReader" in " ".join(proc.cmdline()[:1]):
                        footer_pids.add(proc.pid)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ds = rc.map_tables(rc.read_parquet(str(tmp_path)), lambda t: t)
    rows = sorted(x for batch in ds.iter_batches(batch_format="pyarrow") for x in batch["x"].to_pylist())
    done.set()
    watcher.join()
    assert rows == list(range(600))
    assert len(footer_pids) <= 1, footer_pids


def test_written_files_have_whole_row_groups(ray_local, tmp_path):
    """Ray writes each block it is handed as a row group of its own: 32-row UDF outputs made files of dozens of row
    groups, whose footers then cost the driver memory on every later read of the folder."""
    ds = rc.map_tables(rc.from_items([{"x": i} for i in range(3000)], num_blocks=2), lambda t: t, rows_per_batch=32)
    rc.write_parquet(ds, str(tmp_path))
    metas = [pq.ParquetFile(p).metadata for p in sorted(tmp_path.glob("*.parquet"))]
    assert sum(m.num_rows for m in metas) == 3000
    assert all(m.num_row_groups == -(-m.num_rows // 2048) for m in metas), [(m.num_rows, m.num_row_groups)
                                                                           for m in metas]


def test_each_stage_gets_its_own_data_settings(ray_local):
    """The pipeline job runs every stage in one driver: extraction's object-store share and training's ordering
    must not carry over to the stages after them, which call init_ray without them and get Ray's defaults."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    rc.init_ray(object_store_fraction=0.05)
    assert ctx.override_object_store_memory_limit_fraction == 0.05
    rc.init_ray(preserve_order=True)
    ctx = ray.data.DataContext.get_current()
    assert ctx.override_object_store_memory_limit_fraction is None and ctx.execution_options.preserve_order
    rc.init_ray()
    assert not ray.data.DataContext.get_current().execution_options.preserve_order
