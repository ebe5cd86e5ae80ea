"""tellme accel predict / explore / compare: cycles and resources derived from the design's
parameters, checked against hand counts, the paper's figures, and the JSON shape other tools read."""

import json

import pytest

from tellme.accel import design as ds
from tellme.accel import explore as ex
from tellme.accel import predict as pr
from tellme.accel import resources
from tellme.accel.cycles import CycleModel
from tellme.cli import main

C073, KV260 = ds.MODELS["0.73B"][0], ds.BOARDS["kv260"]


def test_the_free_parameters_are_what_the_fit_gives():
    f = pr.fit(C073, KV260)
    assert f.ddr_latency_ns == pytest.approx(ds.FITTED.ddr_latency_ns, rel=1e-3)
    assert f.host_call_us == pytest.approx(ds.FITTED.host_call_us, rel=1e-3)
    assert f.ddr_efficiency == ds.FITTED.ddr_efficiency  # assumed, not fitted


def test_within_15_percent_of_every_published_figure():
    rows = pr.validation(C073, KV260)
    assert {r["figure"] for r in rows} == set(pr.PUBLISHED) | set(pr.TABLE1) | set(pr.RPA_PUBLISHED_MS)
    for r in rows:
        assert abs(r["error"]) <= 0.15, r
    assert sum(r["fitted"] for r in rows) == 2


def test_rpa_matches_the_papers_reordering_gain():
    """Not fitted: the paper measured 14.3 ms -> 7.6 ms at 128 tokens for reversed reordering."""
    m = CycleModel(C073, KV260)
    assert m.rpa_key_steps(128) == 128 * 16 - 8 * 16 * 15 // 2 == 1088
    ms = pr.rpa_ms(m)
    assert ms["rpa_128_unordered_ms_per_layer"] / ms["rpa_128_ms_per_layer"] == pytest.approx(16 * 128 / 1088)
    assert ms["rpa_128_ms_per_layer"] == pytest.approx(7.6, rel=0.05)
    assert ms["rpa_128_unordered_ms_per_layer"] == pytest.approx(14.3, rel=0.05)


def test_unit_counts_by_hand():
    m = CycleModel(C073, KV260)
    lat = m.latency
    assert m.tlmm_cycles_per_token(1536, 1536) == pytest.approx(19 * (lat + 84 + 27 + 96 + 12))
    assert m.tlmm_cycles_per_token(1536, 4096) == pytest.approx(49 * (lat + 84 + 27 + 96 + 12))
    assert m.load_beats(1536, 1536) == 19 * 308 and m.load_beats(4096, 1536) == 19 * 820
    cyc, nbytes = m.wbmu(1536, 1536)
    assert nbytes == 19 * 308 * 96 and cyc == pytest.approx(lat + nbytes / m.bytes_per_cycle)  # DDR-bound
    cyc, nbytes = m.da(512)
    assert nbytes == 2 * 512 * 1536 * 2 and cyc == pytest.approx(2 * (lat + 512 * (lat + 96)))
    assert m.prefill(61)["padded"] == 64


def test_trends():
    m = CycleModel(C073, KV260)
    ttft = [m.prefill(n)["ttft_s"] for n in (8, 64, 128, 512)]
    decode = [m.decode(L)["decode_tokens_per_s"] for L in (1, 256, 1024)]
    assert ttft == sorted(ttft) and decode == sorted(decode, reverse=True)
    fast = CycleModel(C073, ds.BOARDS["vck190"])
    assert fast.decode(1)["units"]["wbmu"]["cycles"] < m.decode(1)["units"]["wbmu"]["cycles"]
    wide = CycleModel(C073, KV260, ds.with_changes(ds.TELLME_V2, Q=32))
    assert wide.prefill(64)["units"]["tlmm"]["cycles"] < m.prefill(64)["units"]["tlmm"]["cycles"]


def test_resources_follow_the_parameters():
    base = resources.estimate(C073)["total"]
    assert base["uram"] == 3 * 1 * 2 * 8 + 8 + 4  # weight slots (the paper's equation), RPA outputs, score FIFO
    more_q = resources.estimate(C073, ds.with_changes(ds.TELLME_V2, Q=32))["total"]
    assert more_q["lut"] > base["lut"] and more_q["uram"] > base["uram"]
    v = resources.tlmm_variants(C073)
    assert v["full"]["lut"] < v["partial"]["lut"] < v["naive"]["lut"]


def test_predict_json_shape(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["accel", "predict", "--board", "kv260", "--model", "0.73B", "--prompt", "64", "128",
                 "--context", "1", "256", "512", "1024", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "against the paper" in text and "ttft_128_s" in text
    d = json.loads(out.read_text())
    assert d["board"] == "kv260" and d["model"] == "0.73B"
    assert [r["prompt"] for r in d["prefill"]] == [64, 128] and [r["context"] for r in d["decode"]] == [1, 256, 512, 1024]
    for r in d["prefill"]:
        assert {"ttft_s", "prefill_tokens_per_s", "units", "bound"} <= set(r) and r["bound"] == "tlmm"
        assert {"cycles", "ddr_bytes"} <= set(r["units"]["tlmm"])
    for r in d["decode"]:
        assert {"decode_tokens_per_s", "units", "bound"} <= set(r) and "da" in r["units"]
    assert set(d["resources"]["total"]) == {"lut", "ff", "dsp", "bram36", "uram"}
    assert {"tlmm", "wbmu", "rpa", "da", "rms_max"} <= set(d["resources"]["units"])
    assert set(d["tlmm_variants"]) == {"naive", "partial", "full"} and "lut" in d["tlmm_variants"]["full"]


def test_past_the_design_limits_is_predicted_not_refused(capsys):
    assert main(["accel", "predict", "--prompt", "4000", "--context", "2048"]) == 0
    out = capsys.readouterr().out
    assert "KV cache's 3000 positions" in out and "score FIFO" in out


def test_explore_answers_for_2b4t():
    c = ds.MODELS["2B-4T"][0]
    small = ex.explore(c, KV260)
    assert small["released"].tiles["up"] > 1  # 6912 x 2560 does not fit the KV260's URAM in one piece
    big = ex.explore(c, ds.BOARDS["vck190"])
    assert all(t == 1 for t in big["released"].tiles.values())
    for r in (small, big):
        assert r["front"] and all(p.feasible for p in r["front"])
        for p in r["points"]:
            assert p.feasible == (not p.why)
    assert any(not p.feasible and any("LUT" in w for w in p.why) for p in small["points"])


def test_explore_cli(capsys, tmp_path):
    assert main(["accel", "explore", "--board", "kv260", "--model", "2B-4T", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "tiles of 2304 rows" in out
    assert json.loads((tmp_path / "e.json").read_text())["front"]


def test_compare(capsys):
    assert main(["accel", "compare", "--layers", "1", "--decode-tokens", "2", "--prompt", "16", "--cpu-watts", "20"]) == 0
    out = capsys.readouterr().out
    assert "(predicted)" in out and "measured" in out and "tokens per joule" in out


@pytest.mark.parametrize("argv, message", [
    (["accel", "predict", "--board", "pynq-z2"], "unknown board 'pynq-z2'"),
    (["accel", "predict", "--model", "7B"], "unknown model '7B'"),
    (["accel", "predict", "--prompt", "0"], "positive"),
    (["accel", "predict", "--q", "0"], "must be positive"),
    (["accel", "predict", "--c-uram", "1", "--q", "16"], None),
    (["accel", "compare", "--model", "3B"], "synthetic shapes"),
])
def test_bad_arguments(argv, message, capsys):
    rc = main(argv)
    if message is None:
        assert rc == 0
    else:
        assert rc == 1 and message in capsys.readouterr().err


def test_cost_command(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 3)
    out = tmp_path / "c.json"
    assert main(["accel", "cost", str(text), "--tokens", "40", "--window", "16", "--json", str(out)]) == 0
    rows = {r["numerics"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"ideal (none)", "silu_table alone", "fp16 alone", "acc24 alone", "round_away alone",
                         "all (the design)"}
    assert rows["ideal (none)"]["kl_from_ideal"] == 0 and rows["fp16 alone"]["kl_from_ideal"] > 0
    assert rows["acc24 alone"]["perplexity"] == rows["ideal (none)"]["perplexity"]  # no sum comes near 2**23
    assert main(["accel", "cost", str(text), "--window", "1"]) == 1
    assert "--window must be at least 2" in capsys.readouterr().err
