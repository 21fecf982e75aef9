"""bench/replay.py: the surrogate and the replayed searchers, on curves of a known task.

The recorded curves are made here from a rule (val accuracy peaks at a head rate of 1e-3 and
grows with the epochs; frozen epochs are cheap), in the recorder's own file format, so every
searcher replays on real Optuna with a surrogate whose best recipe is known.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import replay  # noqa: E402
import replay_curves  # noqa: E402
import replay_surrogate  # noqa: E402

from tuner.recipe import TrialParams, frozen_depth_at  # noqa: E402


def ruled_curve(k: int) -> dict:
    """Recipe ``k`` with a curve and costs from the rule, as the recorder writes it."""
    name, params, _ = replay_curves.recipe(k)
    peak = 0.9 - 0.1 * abs(math.log10(params.head_lr) + 3)
    epochs = [
        {"val": peak - 0.05 * (3 - e), "frozen_depth": frozen_depth_at(params, e),
         "wall": 1.0 + 3.0 * (5 - frozen_depth_at(params, e)) / 5,
         "cpu": 2.0 + 6.0 * (5 - frozen_depth_at(params, e)) / 5}
        for e in range(4)
    ]  # fmt: skip
    return {"k": k, "name": name, "recipe": dataclasses.asdict(params), "epochs": epochs,
            "test": peak - 0.01}  # fmt: skip


@pytest.fixture(scope="module")
def task() -> replay.Task:
    curves = [ruled_curve(k) for k in range(60)]
    surrogate = replay_surrogate.fit(curves, "extra trees", trial_overhead=1.0)
    space = replay_curves.task_config().space
    return replay.Task(surrogate, space, replay.reference(surrogate, space, curves))


def test_recipes_are_the_same_in_every_session() -> None:
    assert replay_curves.recipe(7) == replay_curves.recipe(7)
    assert replay_curves.recipe(7)[1] != replay_curves.recipe(8)[1]
    assert [replay_curves.recipe(k)[0] for k in range(3)] == [
        name for name, _ in replay_curves.upstream.classic_recipes()
    ]


def test_held_out_error_finds_the_rule() -> None:
    curves = [ruled_curve(k) for k in range(60)]
    compared = replay_surrogate.compare_models(curves)
    assert {h.name for h in compared} == set(replay_surrogate.CANDIDATES)
    assert compared[0].mae.mean() <= compared[-1].mae.mean()
    assert compared[0].rank > 0.8  # the rule is one smooth dimension: easy to rank
    assert compared[0].residuals.shape == (60, 5)


def test_cost_models_price_frozen_epochs_cheaper(task: replay.Task) -> None:
    full = TrialParams(0, None, "all", 1e-3, 1e-4, "adam", 64, 1e-5)
    frozen = TrialParams(5, None, "all", 1e-3, None, "adam", 64, 1e-5)
    for model in replay.COST_MODELS:
        assert task.cost(frozen, model).sum() < 0.6 * task.cost(full, model).sum()
    assert task.surrogate.quiet_share == 1.0  # every ruled epoch has the same wall/CPU ratio
    units = [replay_surrogate.gpu_epoch_units(frozen, e, 2500, 625) for e in range(4)]
    assert units[0] > units[1] == units[2] == units[3]  # the cache fills in the first epoch
    assert replay_surrogate.gpu_epoch_units(full, 2, 2500, 625) == pytest.approx(1.0)


def test_ray_asha_stops_below_the_percentile_of_earlier_peers() -> None:
    pruner = replay.RayASHA(epochs=4)
    assert pruner.steps == [0, 2]
    study = optuna.create_study(direction="maximize", pruner=pruner)
    verdicts = []
    for value in (0.5, 0.9, 0.8, 0.4, 0.75, 0.95):
        trial = study.ask()
        trial.report(value, 0)
        verdicts.append(trial.should_prune())
        study.tell(trial, state=TrialState.PRUNED)
    # the first goes on (no peers); 0.8 clears 0.767, the 2/3 point of 0.5 and 0.9; 0.75
    # misses 0.8, that of 0.4, 0.5, 0.8 and 0.9
    assert verdicts == [False, False, False, True, True, False]


@pytest.mark.parametrize("name", ["tuner", "ray-asha", "random"])
@pytest.mark.parametrize("workers", [1, 4])
def test_a_replayed_search_spends_its_budget_and_finds_the_peak(
    task: replay.Task, name: str, workers: int
) -> None:
    compute = 30 * task.full_trial_seconds("cpu")
    trace = replay.replay(replay.SEARCHERS[name], task, "cpu", 0, compute, workers)
    assert trace.budget == pytest.approx(compute / workers)
    assert trace.trials >= 20
    times = [when for when, _, _ in trace.changes]
    assert times == sorted(times) and times[-1] <= trace.budget
    regrets = [regret for _, regret, _ in trace.changes]
    assert regrets[-1] < 3.0  # within 3 points of the known peak
    assert trace.at(0.0)[0] == float("inf") and trace.time_to(regrets[-1]) <= times[-1]


def test_same_seed_same_search(task: replay.Task) -> None:
    compute = 10 * task.full_trial_seconds("gpu")
    runs = [replay.replay(replay.SEARCHERS["tuner"], task, "gpu", 3, compute, 2) for _ in "ab"]
    assert runs[0].changes == runs[1].changes


def test_one_epoch_top_third_continues_three_of_nine(task: replay.Task) -> None:
    compute = 20 * task.full_trial_seconds("cpu")
    trace = replay.replay_top_third(task, "cpu", 0, compute, 1)
    assert trace.trials >= 9 and trace.changes
    times = [when for when, _, _ in trace.changes]
    assert times == sorted(times) and times[-1] <= trace.budget
    assert np.isfinite(trace.at(trace.budget)[0])


def test_summary_tables_every_fraction(task: replay.Task) -> None:
    compute = 10 * task.full_trial_seconds("cpu")
    traces = [replay.replay(replay.SEARCHERS["random"], task, "cpu", s, compute, 1)
              for s in range(3)]  # fmt: skip
    table = replay.summarise(traces, ["random", "tuner"], "cpu", 1)
    header, _, row = table.splitlines()  # no row for a searcher without traces
    assert header.count("regret at") == len(replay.FRACTIONS)
    assert row.startswith("| random |")
    assert row.count("|") == header.count("|")


def test_paired_table_counts_wins_seed_by_seed() -> None:
    def trace(name: str, seed: int, regret: float) -> replay.Trace:
        return replay.Trace(name, "cpu", 1, seed, 100.0, [(5.0, regret, 0.8)], 10)

    traces = [trace("tuner", s, 1.0 + s) for s in range(8)]
    traces += [trace("random", s, 2.0 + s) for s in range(8)]  # always one point worse
    traces += [trace("ray-asha", s, 1.0 + s - (s % 2)) for s in range(8)]  # half as good
    names = ["tuner", "random", "ray-asha", "optuna-median"]
    table = replay.paired(traces, names, "cpu", 1, against="tuner")
    header, _, random_row, ray_row = table.splitlines()  # no row for tuner nor a missing one
    assert header.count("at ") == len(replay.FRACTIONS)
    assert random_row.startswith("| random | -1.00 (8-0, p=0.0078)")
    assert "+0.50 (0-4" in ray_row


def test_half_time_compares_times_to_the_peers_final_median() -> None:
    def trace(name: str, seed: int, changes: list) -> replay.Trace:
        return replay.Trace(name, "cpu", 1, seed, 100.0, changes, 10)

    traces = [trace("tuner", s, [(10.0, 2.0, 0.8), (20.0, 0.5, 0.8)]) for s in range(3)]
    traces += [trace("random", s, [(40.0, 3.0, 0.8), (80.0, 1.0, 0.8)]) for s in range(3)]
    traces += [trace("ray-asha", s, [(90.0, 0.1, 0.8)]) for s in range(3)]
    table = replay.half_time(traces, ["tuner", "random", "ray-asha"], "cpu", 1, against="tuner")
    _, _, random_row, ray_row = table.splitlines()
    assert random_row == "| random | 1.00 | 80% | 20% | 0.25 |"  # tuner was there at 20 s
    assert ray_row == "| ray-asha | 0.10 | 90% | never | inf |"


def test_load_traces_counts_a_seed_once_taking_the_first_file(tmp_path: Path) -> None:
    def kept(path: Path, regret: float, seeds: range) -> Path:
        traces = [replay.Trace("tuner", "cpu", 1, s, 100.0, [(5.0, regret, 0.8)], 10)
                  for s in seeds]  # fmt: skip
        path.write_text(json.dumps([dataclasses.asdict(t) for t in traces]))
        return path

    first = kept(tmp_path / "first.json", 1.0, range(3))
    second = kept(tmp_path / "second.json", 2.0, range(2, 5))  # seed 2 replayed again
    traces = replay.load_traces([first, second])
    assert sorted(t.seed for t in traces) == [0, 1, 2, 3, 4]
    assert {t.seed: t.at(100.0)[0] for t in traces}[2] == 1.0


def test_run_all_replays_the_plan_on_worker_processes(task: replay.Task, tmp_path: Path) -> None:
    names = ["random", "tuner-startup-4", replay.TOP_THIRD]  # the 2nd: one worker only
    traces = replay.run_all(task, names, seeds=2, budget=5, workers=[1, 2], jobs=2)
    plan = {(t.searcher, t.cost, t.workers, t.seed) for t in traces}
    assert len(traces) == len(plan) == 2 * 2 * (3 + 2)
    assert ("tuner-startup-4", "cpu", 2, 0) not in plan and ("random", "gpu", 2, 1) in plan
    kept = json.loads(json.dumps([dataclasses.asdict(t) for t in traces]))  # as main keeps them
    assert [replay.Trace(**t).at(t["budget"]) for t in kept] == [t.at(t.budget) for t in traces]
    replay.plot(traces, names, 1, tmp_path / "replay.png", bold="random")
    assert (tmp_path / "replay.png").read_bytes()[:4] == b"\x89PNG"


def test_the_recorder_writes_what_the_surrogate_reads(tmp_path: Path) -> None:
    """Recipe 0 (feature extraction, the cheapest) trained for real on digits from random init."""
    from tuner.config import load_config
    from tuner.data import cache_path, prepare_data

    config = load_config(None, ["data.source=digits", f"data.cache_dir={tmp_path}"])
    data = prepare_data(config.data, cache_path(config.data), with_test=True)
    found = replay_curves.record(0, data, "none")
    assert found["name"] == "feature_extraction" and len(found["epochs"]) == 4
    assert found["upstream"] == "none"
    assert all(e["frozen_depth"] == 5 and e["wall"] > 0 and e["cpu"] > 0 for e in found["epochs"])
    assert 0.0 < found["test"] <= 1.0 and found["test_images"] == len(data.test_labels)
    assert replay_surrogate.targets(found).shape == (5,)
    assert replay_surrogate.params_of(found["recipe"]) == replay_curves.recipe(0)[1]


def test_probes_run_right_after_the_classic_recipes(task: replay.Task) -> None:
    fresh = replay.Task(task.surrogate, task.space, task.reference)
    compute = 10 * fresh.full_trial_seconds("cpu")
    replay.replay(replay.SEARCHERS["tuner-probes"], fresh, "cpu", 0, compute, 1)
    tried = list(fresh._mean)  # every recipe the replay asked the surrogate about, in order
    probes = [(p.freeze_depth, p.unfreeze_epoch, p.head_lr) for p in tried[3:7]]
    assert probes == [(5, None, probe["head_lr"]) for probe in replay.PROBES]


def test_a_warm_start_runs_the_earlier_best_recipes_after_the_classics(
    task: replay.Task,
) -> None:
    earlier = [replay_curves.recipe(k) for k in (11, 12)]  # (name, params, Optuna params)
    warm = replay.Task(task.surrogate, task.space, task.reference, tuple(e[2] for e in earlier))
    compute = 10 * warm.full_trial_seconds("cpu")
    replay.replay(replay.SEARCHERS["tuner-warm-start"], warm, "cpu", 0, compute, 1)
    assert list(warm._mean)[3:5] == [params for _, params, _ in earlier]
    plain = replay.Task(task.surrogate, task.space, task.reference, tuple(e[2] for e in earlier))
    replay.replay(replay.SEARCHERS["tuner"], plain, "cpu", 0, compute, 1)
    assert list(plain._mean)[3:5] != [params for _, params, _ in earlier]


def test_confirm_reruns_the_top_trials_inside_the_budget(task: replay.Task) -> None:
    compute = 30 * task.full_trial_seconds("cpu")
    plain = replay.replay(replay.SEARCHERS["tuner"], task, "cpu", 5, compute, 1)
    confirmed = replay.replay(replay.SEARCHERS["tuner-confirm-3"], task, "cpu", 5, compute, 1)
    reserve = 3 * replay.CONFIRM_SEEDS * task.full_trial_seconds("cpu")
    assert confirmed.trials < plain.trials  # the re-runs' time came out of the search
    searched = [when for when, _, _ in confirmed.changes if when <= compute - reserve]
    assert len(searched) == len(confirmed.changes) - 1  # one hand-back after the search
    assert compute - reserve < confirmed.changes[-1][0] <= compute
    params = replay_curves.recipe(3)[1]
    assert np.array_equal(task.observed(params, 5, run=1), task.observed(params, 5, run=1))


def test_recordings_are_kept_per_upstream_build() -> None:
    found = replay_curves.recordings()
    assert found and all(p.name.startswith("upstream-") for p in found)
    assert replay_curves.largest_recording() == found[0]
    assert replay_curves.other_recording(found[0]) != found[0]


def test_noise_comes_from_the_spread_of_replicates() -> None:
    curves = [ruled_curve(k) for k in range(60)]
    replicates = []
    for k in range(10):  # each recipe run twice more, 1 point above and 1 below its recording
        runs = [ruled_curve(k)]
        for shift in (0.01, -0.01):
            run = ruled_curve(k)
            run["epochs"] = [{**e, "val": e["val"] + shift} for e in run["epochs"]]
            runs.append({**run, "test": run["test"] + shift})
        replicates.append(runs)
    surrogate = replay_surrogate.fit(curves, "extra trees", 1.0, replicates)
    assert surrogate.noise.shape == (30, 5) and "10 recipes" in surrogate.noise_source
    # deviations 0 and +-1 point, scaled by sqrt(3/2) to single runs' spread
    assert sorted(set(np.round(100 * surrogate.noise[:, 0], 6))) == pytest.approx(
        [-math.sqrt(1.5), 0.0, math.sqrt(1.5)]
    )
    assert "held-out" in replay_surrogate.fit(curves, "extra trees", 1.0).noise_source


def test_a_recipe_draws_its_noise_from_the_replicated_recipes_nearest_it() -> None:
    curves = [ruled_curve(k) for k in range(60)]
    replicates = []
    for k in range(8):  # recipe k's runs deviate by k + 1 points
        runs = [ruled_curve(k)]
        for shift in (0.01 * (k + 1), -0.01 * (k + 1)):
            run = ruled_curve(k)
            runs.append({**run, "epochs": [{**e, "val": e["val"] + shift} for e in run["epochs"]]})
        replicates.append(runs)
    surrogate = replay_surrogate.fit(curves, "extra trees", 1.0, replicates)
    for k in range(8):
        rows = surrogate.noise_rows(replay_surrogate.params_of(ruled_curve(k)["recipe"]))
        assert len(rows) == 3 * replay_surrogate.NOISE_NEIGHBOURS
        own = math.sqrt(1.5) * (k + 1)  # its own spread is among them
        assert np.isclose(100 * np.abs(rows[:, 0]), own).sum() == 2


def test_replicates_are_kept_apart_and_grouped_with_their_recording(tmp_path: Path) -> None:
    for k, replicate in [(0, 0), (0, 1), (0, 2), (1, 0), (2, 1)]:  # 2's recording is missing
        path = replay_curves.curve_path(tmp_path, k, replicate)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"k": k, "replicate": replicate}))
    assert [c["k"] for c in replay_curves.load_curves(tmp_path)] == [0, 1]
    groups = replay_curves.load_replicates(tmp_path)
    assert [[run["replicate"] for run in runs] for runs in groups] == [[0, 1, 2]]
