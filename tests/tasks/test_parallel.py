"""Progress of long stages reaches the log the build flow points at the Prefect run logger."""

import time

from tasks.parallel import FileCountProgress, run_parallel


def _square(x):
    return x * x


def test_run_parallel_keeps_job_order_and_logs_progress():
    lines = []
    assert run_parallel(_square, [(3,), (1,), (2,)], 1, None, "match: shards", lines.append) == [9, 1, 4]
    assert lines and lines[-1].startswith("match: shards: 3/3 (100%)")


def test_run_parallel_in_processes_logs_the_end():
    lines = []
    assert run_parallel(_square, [(i,) for i in range(5)], 2, None, "candidates: inputs", lines.append) == [0, 1, 4, 9, 16]
    assert lines[-1].startswith("candidates: inputs: 5/5 (100%)")


def test_file_count_progress_reports_files_other_processes_write(tmp_path):
    lines = []
    with FileCountProgress(tmp_path, "*_stats.json", 4, "download: shards", lines.append, every=0.05):
        for i in range(3):
            (tmp_path / f"{i:05d}_stats.json").write_text("{}")
            time.sleep(0.12)
    assert any(line.startswith(("download: shards: 1/4", "download: shards: 2/4")) for line in lines[:-1])
    assert lines[-1].startswith("download: shards: 3/4 (75%)")


def test_progress_lines_still_reach_the_log_when_tqdm_is_disabled(monkeypatch):
    """TQDM_DISABLE=1 (CI, deployments) turns the terminal bar off, not the Prefect log lines."""
    from tasks.parallel import LoggedProgress

    monkeypatch.setenv("TQDM_DISABLE", "1")
    lines = []
    with LoggedProgress(total=3, desc="stage: jobs", log=lines.append, every=0.0) as bar:
        for _ in range(3):
            bar.update(1)
    assert lines[-1].startswith("stage: jobs: 3/3 (100%)") and len(lines) == 3
