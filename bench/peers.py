"""The searchers `bench/anytime.py` runs beside `tuner search`, each as a user would write it.

    python bench/peers.py SEARCHER --task TASK_DIR --seed S --budget SECONDS --work DIR

SEARCHER is one of:

* ``optuna``: a plain Optuna loop as Optuna's examples write it: the data loaded once as
  tensors, a PyTorch training loop, TPE (default settings) and a MedianPruner.
* ``top_third``: "one epoch, then continue the top third": random recipes in rounds of 9,
  each trained one epoch; the best 3 of the round go on to the full run.
* ``ray``: Ray Tune with ``ASHAScheduler`` and ``OptunaSearch``, as a competent Ray user
  would write it: the data put once in Ray's object store (``tune.with_parameters``), one
  trial at a time on both cores, actors reused. Runs in the bench's own Ray environment.
* ``reference``: the notebook-style search of ``bench/reference_search.py`` (PNG files, PIL
  and torchvision transforms in a DataLoader every epoch, MedianPruner).

All of them search tuner's default space without the recipe tricks their plain training loop
leaves out (``reference_search.PLAIN_SPACE``, sampled by ``tuner.search.space.sample``), on
the task's train/val images (prepared by tuner, so the same pixels and split), with the same epochs,
cosine schedule, flips and starting weights, and train on the CPU with two threads. Each
hands back one model: the best of the trials it completed (Ray: of every result it got,
stopped trials' too, as ``get_best_result(scope="all")`` would). :class:`Keeper` writes each
new best to the work folder with the seconds since the searcher started; the test images
are read only afterwards, by ``anytime.py``, for the model handed back.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import reference_search  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tuner.search.space import sample  # noqa: E402

T0 = float(os.environ.get("BENCH_T0", time.time()))
"""When anytime.py started this searcher (wall clock, shared by every process of a searcher)."""
MEAN = torch.tensor(reference_search.MEAN).view(1, 3, 1, 1)
STD = torch.tensor(reference_search.STD).view(1, 3, 1, 1)
THREADS = 2


@dataclass(frozen=True)
class Task:
    """A task as `anytime.py` wrote it: uint8 train/val images, labels, classes, weights."""

    folder: Path
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    epochs: int
    weights: str | None  # a state-dict file (safetensors), or None: random init

    @classmethod
    def load(cls, folder: Path) -> Task:
        arrays = torch.load(folder / "data.pt", weights_only=True)
        meta = json.loads((folder / "task.json").read_text())
        return cls(
            folder,
            arrays["train_x"],
            arrays["train_y"],
            arrays["val_x"],
            arrays["val_y"],
            meta["num_classes"],
            meta["epochs"],
            meta["weights"],
        )

    def start_state(self) -> dict | None:
        if self.weights is None:
            return None
        from safetensors.torch import load_file

        return load_file(self.weights)


class Keeper:
    """The model a searcher would hand back, kept as it improves: ``best.pt`` and one line per
    improvement in ``best.jsonl`` (seconds since the searcher started, val accuracy, trial)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.best = -1.0
        work.mkdir(parents=True, exist_ok=True)

    def started(self) -> None:
        """Count a trial the searcher starts, in ``trials.json`` at once: a searcher is killed
        a few seconds past its budget, often inside a trial, before it could count at the end."""
        path = self.work / "trials.json"
        count = json.loads(path.read_text())["started"] if path.exists() else 0
        path.write_text(json.dumps({"started": count + 1}))

    def offer(self, value: float, trial: str, state: dict[str, torch.Tensor]) -> None:
        record = self.work / "best.json"
        if record.exists():  # Ray runs trials in other processes: the file is the truth
            self.best = json.loads(record.read_text())["value"]
        if value <= self.best:
            return
        self.best = value
        torch.save(state, self.work / "best.pt")
        line = {"t": time.time() - T0, "value": value, "trial": trial}
        record.write_text(json.dumps(line))
        with open(self.work / "best.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")


class TensorTrial:
    """One recipe trained the plain way on tensors: a model, its optimizer, epoch by epoch.

    The frozen stages, the optimizer rebuilt when stages unfreeze, and the cosine schedule
    are ``reference_search``'s; the batches come from tensors in memory instead of files.
    """

    def __init__(self, task: Task, params, seed: int, state: dict | None) -> None:
        torch.manual_seed(seed)
        self.task, self.params = task, params
        self.model = reference_search.new_model(state, task.num_classes)
        self.depth = params.freeze_depth
        reference_search.freeze(self.model, self.depth)
        self.optimizer = reference_search.make_optimizer(self.model, params, self.depth)
        self.generator = torch.Generator().manual_seed(seed)
        self.criterion = nn.CrossEntropyLoss()
        self.epoch, self.best, self.best_state = 0, -1.0, None

    def train_epoch(self) -> float:
        """Train the next epoch; its validation accuracy (the best epoch's weights are kept)."""
        params, epoch = self.params, self.epoch
        if reference_search.depth_at(params, epoch) != self.depth:
            self.depth = reference_search.depth_at(params, epoch)
            reference_search.freeze(self.model, self.depth)
            self.optimizer = reference_search.make_optimizer(self.model, params, self.depth)
        factor = 0.5 * (1 + math.cos(math.pi * epoch / self.task.epochs))
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.model.train()
        x, y = self.task.train_x, self.task.train_y
        order = torch.randperm(len(y), generator=self.generator)
        size = params.batch_size
        for start in range(0, len(y) - size + 1, size):  # drop_last, as the DataLoader does
            index = order[start : start + size]
            images = x[index].float() / 255
            flip = torch.rand(len(index), generator=self.generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
            self.optimizer.zero_grad()
            loss = self.criterion(self.model((images - MEAN) / STD), y[index])
            loss.backward()
            self.optimizer.step()
        accuracy = evaluate(self.model, self.task.val_x, self.task.val_y)
        self.epoch += 1
        if accuracy > self.best:
            self.best = accuracy
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return accuracy


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), 256):
        x = images[start : start + 256].float() / 255
        correct += (model((x - MEAN) / STD).argmax(1) == labels[start : start + 256]).sum().item()
    return correct / len(labels)


def time_left(budget: float) -> float:
    return budget - (time.time() - T0)


# --- the searchers --------------------------------------------------------------------------


def run_optuna(task: Task, seed: int, budget: float, keeper: Keeper) -> None:
    """Optuna's examples: TPE and a MedianPruner, report and should_prune every epoch."""
    state = task.start_state()

    def objective(trial: optuna.Trial) -> float:
        keeper.started()
        params = sample(trial, reference_search.PLAIN_SPACE, task.epochs)
        run = TensorTrial(task, params, seed * 1000 + trial.number, state)
        for epoch in range(task.epochs):
            accuracy = run.train_epoch()
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        keeper.offer(run.best, f"optuna-{trial.number}", run.best_state)
        return run.best

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(objective, timeout=time_left(budget))


def run_top_third(task: Task, seed: int, budget: float, keeper: Keeper) -> None:
    """Rounds of 9 random recipes for one epoch each; the best 3 of a round run to the end."""
    state = task.start_state()
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    number = 0
    while time_left(budget) > 0:
        runs = []
        for _ in range(9):
            params = sample(study.ask(), reference_search.PLAIN_SPACE, task.epochs)
            keeper.started()
            run = TensorTrial(task, params, seed * 1000 + number, state)
            runs.append((run.train_epoch(), number, run))
            number += 1
            if time_left(budget) <= 0:
                return
        for _, kept, run in sorted(runs, key=lambda r: -r[0])[:3]:
            while run.epoch < task.epochs:
                run.train_epoch()
                if time_left(budget) <= 0:
                    return
            keeper.offer(run.best, f"top-third-{kept}", run.best_state)


def define_space(trial: optuna.Trial, epochs: int) -> None:
    """The space for OptunaSearch's define-by-run API (module level: Ray pickles it)."""
    sample(trial, reference_search.PLAIN_SPACE, epochs)


def run_ray(task: Task, seed: int, budget: float, keeper: Keeper) -> None:
    """Ray Tune: ASHA (grace period 1 epoch, reduction factor 3) over OptunaSearch (TPE)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=THREADS, include_dashboard=False, log_to_driver=False)
    data = {"train_x": task.train_x, "train_y": task.train_y,
            "val_x": task.val_x, "val_y": task.val_y}  # fmt: skip

    def trainable(config: dict, data: dict) -> None:
        torch.set_num_threads(THREADS)
        Keeper(keeper.work).started()
        params = sample(optuna.trial.FixedTrial(config), reference_search.PLAIN_SPACE, task.epochs)
        own = Task(task.folder, **data, num_classes=task.num_classes, epochs=task.epochs,
                   weights=task.weights)  # fmt: skip
        trial = tune.get_context().get_trial_id()
        run = TensorTrial(own, params, seed * 1000 + zlib.crc32(trial.encode()) % 1000,
                          own.start_state())  # fmt: skip
        for _ in range(own.epochs):
            accuracy = run.train_epoch()
            Keeper(keeper.work).offer(run.best, f"ray-{trial}", run.best_state)
            tune.report({"val_accuracy": accuracy})

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, data=data), {"cpu": THREADS}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                functools.partial(define_space, epochs=task.epochs),
                metric="val_accuracy",
                mode="max",
                seed=seed,
            ),
            scheduler=ASHAScheduler(
                metric="val_accuracy",
                mode="max",
                max_t=task.epochs,
                grace_period=1,
                reduction_factor=3,
            ),
            num_samples=-1,
            max_concurrent_trials=1,
            time_budget_s=time_left(budget),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(keeper.work / "ray"), verbose=0),
    )
    tuner.fit()
    ray.shutdown()


def run_reference(task: Task, seed: int, budget: float, keeper: Keeper) -> None:
    """The notebook way, on PNG files of the same images (written by anytime.py)."""
    state = task.start_state()
    train_dir, val_dir = task.folder / "png" / "train", task.folder / "png" / "val"

    def offer(trial: optuna.Trial, value: float, state: dict) -> None:
        keeper.offer(value, f"reference-{trial.number}", state)

    objective = reference_search.objective_for(
        train_dir, val_dir, task.epochs, [0], state,
        num_classes=task.num_classes, seed=seed, on_best=offer,
    )  # fmt: skip
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )

    def counted(trial: optuna.Trial) -> float:
        keeper.started()
        return objective(trial)

    study.optimize(counted, timeout=time_left(budget))


SEARCHERS = {
    "optuna": run_optuna,
    "top_third": run_top_third,
    "ray": run_ray,
    "reference": run_reference,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("searcher", choices=SEARCHERS)
    parser.add_argument("--task", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    np.random.seed(args.seed)
    SEARCHERS[args.searcher](Task.load(args.task), args.seed, args.budget, Keeper(args.work))


if __name__ == "__main__":
    main()
