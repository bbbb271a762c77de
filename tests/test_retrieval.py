import pytest

from conftest import EXAMPLES, run_cli, run_json
from ragtune.retrieval import rrf


def test_rrf_fuses_rankings():
    fused = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert [c for c, _ in fused][:2] == ["a", "c"]
    assert dict(fused)["a"] == pytest.approx(1 / 61 + 1 / 62)


def test_search_with_the_real_embedder(home):
    """Integration: the real all-MiniLM-L6-v2 (int8 ONNX) through ingest and hybrid/dense/bm25 search."""
    r = run_json(home, "ingest", str(EXAMPLES / "helpcenter" / "v1"), RAGTUNE_EMBEDDER="minilm")
    assert r["added"] >= 10 and r["failed"] == []
    for mode in ("hybrid", "dense", "bm25"):
        out = run_json(home, "search", "how long is the battery warranty", "--mode", mode, "-k", "3",
                       RAGTUNE_EMBEDDER="minilm")
        assert out["hits"][0]["source"].endswith("warranty.md"), (mode, out["hits"][0]["source"])
        assert out["hits"][0]["heading"] and out["hits"][0]["title"]


def test_bots_never_see_each_other(home, tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "secret.md").write_text("# Canary\n\nThe canary phrase is zebra quartz lantern.")
    run_json(home, "ingest", str(a), "--bot", "alpha")
    run_json(home, "ingest", str(EXAMPLES / "helpcenter" / "v1"), "--bot", "beta")
    for mode in ("hybrid", "bm25", "dense"):
        out = run_json(home, "search", "zebra quartz lantern canary", "--bot", "beta", "--mode", mode, "-k", "20")
        assert all("zebra" not in h["text"] for h in out["hits"])
    assert run_json(home, "search", "zebra quartz lantern", "--bot", "alpha")["hits"]


def test_answering_warns_when_the_bot_was_embedded_with_another_embedder(home):
    run_cli(home, "ingest", str(EXAMPLES / "helpcenter" / "v1"), "--bot", "kb")  # the hash embedder
    proc = run_cli(home, "ask", "How long is the warranty?", "--bot", "kb", "--model", "echo",
                   RAGTUNE_EMBEDDER="minilm")
    assert "embedded with hash-384, not all-MiniLM-L6-v2/onnx-int8" in proc.stderr
    assert "ragtune sync --bot kb" in proc.stderr
    run_cli(home, "sync", "--bot", "kb", RAGTUNE_EMBEDDER="minilm")
    proc = run_cli(home, "ask", "How long is the warranty?", "--bot", "kb", "--model", "echo",
                   RAGTUNE_EMBEDDER="minilm")
    assert "warning" not in proc.stderr
