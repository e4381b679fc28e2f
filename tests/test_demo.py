"""``python -m fastgan demo``: metrics on hand-made samples, tiny runs writing valid files, the CLI's
bad-input handling, the README copy of the training loop, and one real learning check."""
import json
import math
import os
import re

import pytest
import torch

from fastgan import demo
from fastgan.__main__ import main

STD = demo.MODE_STD
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def one_thread():
    # the demo's networks are tiny; one thread is what the CLI uses and keeps CI timings stable
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# metrics on hand-made samples
def test_centers():
    c8 = demo.mixture_centers("8gaussians")
    assert c8.shape == (8, 2)
    torch.testing.assert_close(c8.norm(dim=1), torch.full((8,), 2.0))
    angles = sorted(round(math.degrees(math.atan2(y, x))) % 360 for x, y in c8.tolist())
    assert angles == list(range(0, 360, 45))
    c25 = demo.mixture_centers("25gaussians")
    assert sorted(map(tuple, c25.tolist())) == [(float(x), float(y)) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)]


def _around(center, n, radius, gen):
    """n points at exactly `radius` from center, random directions."""
    a = 2 * math.pi * torch.rand(n, generator=gen)
    return torch.tensor(center) + radius * torch.stack([a.cos(), a.sin()], 1)


def test_all_modes_covered():
    c = demo.mixture_centers("8gaussians")
    gen = torch.Generator().manual_seed(0)
    s = torch.cat([_around(ci.tolist(), 300, 2.9 * STD, gen) for ci in c] + [torch.zeros(100, 2)])
    m = demo.mode_metrics(s, c)
    assert m == {"modes_covered": 8, "n_modes": 8, "high_quality": pytest.approx(2400 / 2500)}


def test_one_mode_covered():
    c = demo.mixture_centers("25gaussians")
    gen = torch.Generator().manual_seed(1)
    m = demo.mode_metrics(_around([2.0, -4.0], 2500, 0.5 * STD, gen), c)
    assert m == {"modes_covered": 1, "n_modes": 25, "high_quality": 1.0}


def test_mode_rule_thresholds():
    c = demo.mixture_centers("8gaussians")
    gen = torch.Generator().manual_seed(2)
    s = torch.cat([
        _around(c[0].tolist(), demo.MIN_MODE_SAMPLES, 2.99 * STD, gen),       # covered: exactly the minimum
        _around(c[1].tolist(), demo.MIN_MODE_SAMPLES - 1, 0.1 * STD, gen),    # one short: not covered
        _around(c[2].tolist(), 500, 3.01 * STD, gen),                         # just outside 3σ: low quality
        _around(c[3].tolist(), 5, 0.0, gen),
    ])
    m = demo.mode_metrics(s, c)
    n_good = 2 * demo.MIN_MODE_SAMPLES - 1 + 5
    assert m["modes_covered"] == 1
    assert m["high_quality"] == pytest.approx(n_good / len(s))


def test_nn_distance_brute_force():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(37, 5, generator=gen), torch.randn(23, 5, generator=gen)
    want = sum(min(math.dist(x, y) for y in b.tolist()) for x in a.tolist()) / len(a)
    assert demo.nn_distance(a, b) == pytest.approx(want, rel=1e-12)
    assert demo.nn_distance(a, a) == 0.0


def test_metrics_of_real_data_are_good():
    # data scored as if generated: all modes, ~99.7% within 3σ (2-D: 98.9%), and the digits proxy ~1
    for ds in ("8gaussians", "25gaussians"):
        x = demo.make_sampler(ds, torch.Generator().manual_seed(4))(demo.N_EVAL)
        m = demo.sample_metrics(ds, x, torch.Generator().manual_seed(5))
        assert m["modes_covered"] == m["n_modes"]
        assert 0.97 < m["high_quality"] < 1.0
    train_x, test_x = demo.digits_split()
    assert train_x.shape == (1500, 64) and test_x.shape == (297, 64)
    assert train_x.min() >= -1 and train_x.max() <= 1
    m = demo.sample_metrics("digits", train_x[-297:], torch.Generator().manual_seed(6))
    assert 0.8 < m["nn_gen_to_test"] < 1.25 and 0.8 < m["nn_test_to_gen"] < 1.25
    collapsed = demo.sample_metrics("digits", train_x[:1].expand(297, 64), torch.Generator().manual_seed(6))
    assert collapsed["nn_test_to_gen"] > 1.5  # a one-digit generator misses the held-out digits


# --------------------------------------------------------------------------------------------
# tiny runs through the CLI
def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert float(img[..., :3].std()) > 0.01, f"{path} is blank"


def _check_run(out, dataset, methods, steps):
    names = set(os.listdir(out))
    for name in methods:
        assert {f"{name}.png", f"{name}_losses.png", f"{name}.json"} <= names
        _check_png(os.path.join(out, f"{name}.png"))
        _check_png(os.path.join(out, f"{name}_losses.png"))
        with open(os.path.join(out, f"{name}.json")) as f:
            rec = json.load(f)
        assert rec["dataset"] == dataset and rec["method"] == name and rec["steps"] == steps
        assert len(rec["history"]["d_loss"]) == steps == len(rec["history"]["g_loss"])
        m = rec["metrics"]
        assert m["sec_per_critic_step"] > 0 and m["train_seconds"] > 0
        assert all(math.isfinite(v) for v in m.values()), m
    _check_png(os.path.join(out, "overview.png"))
    with open(os.path.join(out, "summary.json")) as f:
        assert sorted(json.load(f)) == sorted(methods)
    with open(os.path.join(out, "summary.md")) as f:
        table = f.read()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split("|")[1].strip() for r in rows] == list(methods)
    return table


FAMILIES = ["vanilla", "wgan-clip", "wgan-gp", "sngan", "instance-noise"]


def test_tiny_run_8gaussians(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["demo", "--method", *FAMILIES, "--steps", "3", "--batch-size", "16", "--out", str(out),
                 "--jobs", "1"]) == 0
    table = _check_run(out, "8gaussians", FAMILIES, 3)
    cap = capsys.readouterr()
    assert table.strip() in cap.out and "modes covered" in table
    assert re.search(r"wgan-gp .*3/3", cap.err)  # progress bar reached the end


def test_tiny_run_digits(tmp_path, one_thread, capsys):
    out = tmp_path / "d"
    assert main(["demo", "--dataset", "digits", "--method", "nonsaturating", "r1", "--steps", "2",
                 "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    table = _check_run(out, "digits", ["nonsaturating", "r1"], 2)
    assert "NN gen→test" in table and "modes" not in table
    assert capsys.readouterr().err == ""  # --quiet: no progress bars


def test_tiny_run_swissroll_and_every_method(one_thread):
    for name in demo.METHODS:
        _, samples, m, hist = demo.run_one("swissroll", name, steps=2, batch_size=8, seed=1, progress=False)
        assert samples.shape == (demo.N_EVAL, 2) and torch.isfinite(samples).all()
        assert set(m) >= {"nn_gen_to_data", "nn_data_to_gen"} and "modes_covered" not in m
        assert all(math.isfinite(v) for v in hist["d_loss"] + hist["g_loss"]), name


def test_same_seed_same_result(one_thread):
    a = demo.run_one("25gaussians", "lp", steps=3, batch_size=8, seed=7, progress=False)
    b = demo.run_one("25gaussians", "lp", steps=3, batch_size=8, seed=7, progress=False)
    c = demo.run_one("25gaussians", "lp", steps=3, batch_size=8, seed=8, progress=False)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


# --------------------------------------------------------------------------------------------
# bad input: exit code 2, a clear message, nothing written
@pytest.mark.parametrize("args, words", [
    (["--dataset", "mnist"], "--dataset"),
    (["--method", "wgan-gp", "bogus"], "--method"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--steps", "ten"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--jobs", "0"], "--jobs"),
])
def test_bad_cli_input(tmp_path, capsys, args, words):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and args[-1] in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep")
    assert main(["demo", "--out", str(f), "--steps", "1", "--jobs", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert f.read_text() == "keep" and os.listdir(tmp_path) == ["file"]


# --------------------------------------------------------------------------------------------
# the README's worked example is the demo's training loop, verbatim
def test_readme_has_the_training_loop():
    with open(demo.__file__) as f:
        src = f.read()
    block = src.split("# ---8<--- README: Training a GAN with fastgan ---8<---\n")[1]
    block = block.split("# ---8<--- end of README example ---8<---")[0].strip()
    assert block.startswith("def train(") and "fg.gradient_penalty" not in block
    readme = os.path.join(os.path.dirname(demo.__file__), os.pardir, "README.md")
    with open(readme) as f:
        text = f.read()
    section = text.split("## Training a GAN with fastgan")[1]
    assert block in section


# --------------------------------------------------------------------------------------------
# real training at the demo's defaults: each method's expected outcome (demo.EXPECT) on several
# seeds. One seed passes or fails by CPU (the SIMD width changes rounding and the trajectory
# follows), so a check counts seeds; benchmarks/demo_sweep.py measured every method on seeds 0-4
# under ATEN_CPU_CAPABILITY=avx2 (+ MKL_ENABLE_INSTRUCTIONS=AVX2), avx512 and default
# (benchmarks/results/demo_sweep/results.md, which gives the margins of the thresholds below).
# Checked here, within CI's budget (about 180 CPU-seconds, spread over worker processes): WGAN-GP
# learns (the method that flipped by machine in issue 13), the non-saturating GAN fails (0-1 modes) and
# WGAN with weight clipping fails.
OUTCOME_CHECKS = ["wgan-gp", "nonsaturating", "wgan-clip"]
OUTCOME_SEEDS = (0, 1, 2)
LEARNED_HQ = 0.2     # a learned run also puts > 20% of its samples within 3σ of a mode
FAILED_MODES = 2     # a failed run covers at most 2 of the 8 modes


@pytest.fixture(scope="module")
def trained():
    """{(method, seed): metrics}, the runs spread over worker processes (one thread each)."""
    import concurrent.futures
    import multiprocessing

    # the longest runs first, so that the pool finishes together
    jobs = [(m, s) for m in sorted(OUTCOME_CHECKS, key=lambda n: -demo._cost("8gaussians", n, None))
            for s in OUTCOME_SEEDS]
    workers = max(1, min(len(jobs), len(os.sched_getaffinity(0))))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futs = {job: pool.submit(demo.run_metrics, "8gaussians", job[0], job[1]) for job in jobs}
        return {job: f.result() for job, f in futs.items()}


def expected_outcome_holds(name, runs):
    """A method that learns covers >= MIN_MODES_LEARNED modes with more than LEARNED_HQ of its
    samples of high quality in all but one seed; one that fails covers at most FAILED_MODES modes
    in all but one seed."""
    if demo.EXPECT[name] == "learns":
        good = [m["modes_covered"] >= demo.MIN_MODES_LEARNED and m["high_quality"] > LEARNED_HQ for m in runs]
    else:
        good = [m["modes_covered"] <= FAILED_MODES for m in runs]
    return sum(good) >= len(runs) - 1


@pytest.mark.parametrize("name", OUTCOME_CHECKS)
def test_expected_outcome_on_8gaussians(trained, name):
    runs = [trained[(name, s)] for s in OUTCOME_SEEDS]
    assert expected_outcome_holds(name, runs), [(m["modes_covered"], round(m["high_quality"], 3)) for m in runs]


def test_outcome_rule_can_fail():
    collapsed = {"modes_covered": 1, "high_quality": 0.9}
    learned = {"modes_covered": 8, "high_quality": 0.7}
    assert not expected_outcome_holds("lp", [collapsed, collapsed, learned])
    assert expected_outcome_holds("lp", [collapsed, learned, learned])
    assert not expected_outcome_holds("wgan-clip", [learned, learned, collapsed])
    two, three = {"modes_covered": 2, "high_quality": 0.1}, {"modes_covered": 3, "high_quality": 0.1}
    assert expected_outcome_holds("nonsaturating", [collapsed, two, learned])
    assert not expected_outcome_holds("nonsaturating", [collapsed, three, learned])


def test_equal_critic_budget(tmp_path, monkeypatch, one_thread):
    # by default every method gets the same number of critic updates: n_critic x generator steps
    for ds in demo.DATASETS:
        for name, m in demo.METHODS.items():
            assert demo.default_steps(ds, name) * m.n_critic == demo.CRITIC_STEPS[ds], (ds, name)
    assert demo.default_steps("8gaussians", "wgan-gp") == 1000
    assert demo.default_steps("8gaussians", "r1") == 5000
    # the runs use it when no --steps is given, and --steps overrides it for every method
    monkeypatch.setitem(demo.CRITIC_STEPS, "8gaussians", 10)
    demo.run("8gaussians", ["wgan-gp", "r1"], steps=None, batch_size=8, seed=0, out=str(tmp_path / "a"),
             progress=False, jobs=1)
    demo.run("8gaussians", ["wgan-gp", "r1"], steps=3, batch_size=8, seed=0, out=str(tmp_path / "b"),
             progress=False, jobs=1)
    for out, want in (("a", {"wgan-gp": 2, "r1": 10}), ("b", {"wgan-gp": 3, "r1": 3})):
        for name, steps in want.items():
            with open(tmp_path / out / f"{name}.json") as f:
                rec = json.load(f)
            assert rec["steps"] == steps == len(rec["history"]["g_loss"]), (out, name)


def test_every_method_names_its_source_and_outcome():
    for name, m in demo.METHODS.items():
        assert len(m.source) > 30 and any(str(y) in m.source for y in range(2014, 2026)), name
        assert demo.EXPECT[name] in ("learns", "fails")


def test_parallel_runs_equal_serial_runs(tmp_path, one_thread):
    names = ["wgan-gp", "nonsaturating"]
    serial, _ = demo.run("8gaussians", names, steps=3, batch_size=16, seed=4, out=str(tmp_path / "a"),
                         progress=False, jobs=1)
    parallel, _ = demo.run("8gaussians", names, steps=3, batch_size=16, seed=4, out=str(tmp_path / "b"),
                           progress=False, jobs=2)
    for n in names:
        for k in ("nn_gen_to_data", "nn_data_to_gen", "final_d_loss", "final_g_loss"):
            assert serial[n][k] == parallel[n][k], (n, k)
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.listdir(tmp_path / "b"))
