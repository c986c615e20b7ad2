"""``vlmkit bench serve``: a small run sends every request, loses none, and reports both phases."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vlmkit.cli import cli


def test_bench_serve_answers_every_request_and_batches(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "serve",
            "mgm-tiny",
            "--clients",
            "4",
            "--requests",
            "8",
            "--max-tokens",
            "4",
            "--max-wait-ms",
            "50",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for phase in ("one_at_a_time", "batched"):
        assert (figures[phase]["sent"], figures[phase]["answered"], figures[phase]["failed"]) == (
            8,
            8,
            0,
        )
        assert 0 < figures[phase]["p50_s"] <= figures[phase]["p95_s"]
    assert figures["one_at_a_time"]["mean_batch"] == 1.0
    assert figures["batched"]["mean_batch"] > 1.0
    assert (
        figures["speedup"]
        == figures["batched"]["requests_per_s"] / figures["one_at_a_time"]["requests_per_s"]
    )
    assert "4 clients" in result.output and "throughput with batching" in result.output
