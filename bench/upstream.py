"""The upstream model of the real race: a ResNet-18 pretrained on Fashion-MNIST, as ImageNet
is for our users, and the downstream task it is fine-tuned on.

    python bench/upstream.py build [--objective mixed] [--epochs 2] [--seed 0]
    python bench/upstream.py check [--task fashion|digits] [--seeds 3] [--out bench/RESULTS.md]

``build`` pretrains on the upstream classes (trouser, dress, sandal, sneaker, bag: every one
of their 30,000 training photos) and saves the backbone as a state-dict file that
``model.weights`` accepts, beside ``recipe.json`` (the recipe, the upstream test accuracy on
their 5,000 official test photos, seconds, SHA-256). The objective is ``supervised`` (those
classes), ``rotation`` (self-supervised: which of 0/90/180/270 degrees each of the 60,000
unlabelled training photos was turned by, a common real workflow: pretrain on unlabelled
data, fine-tune on few labels) or ``mixed`` (both heads on one backbone, every step). It is
seeded and cached under ``bench/.cache/upstream/<objective>-<recipe hash>/``: built once,
rebuilt only when its recipe changes (or the ignored cache is gone); ``recipe.json`` and the
check's runs are kept, tracked, in ``bench/runs/upstream/<objective>-<recipe hash>/``.

The downstream task (:data:`DOWNSTREAM`) is the other five classes (T-shirt/top, pullover,
coat, shirt, ankle boot), 500 training and 125 validation photos per class (seeded), tested on
all their 5,000 official test photos. ``check`` measures what makes it a task worth racing on,
with tuner's own engine: fine-tuning from the upstream against random init, and per freeze
depth the best of a small learning-rate grid (chosen on validation) from either start, several
seeds, each run's test predictions cached so that a later session resumes or re-analyses.
``check --task digits`` does the same on a second downstream task with a domain shift
(:data:`DIGITS`: scikit-learn's handwritten digits, fine-tuned from the same upstream).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from results_file import append_run  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from tuner import stats  # noqa: E402
from tuner.config import DataConfig, load_config  # noqa: E402
from tuner.data import PreparedData, augment_batch, cache_path, normalize, prepare_data  # noqa: E402
from tuner.engine import (  # noqa: E402
    FeatureCache,
    TrainEnvironment,
    TrainHooks,
    TrainResult,
    build_model,
    evaluate,
    file_sha256,
    resolve_weights,
    train,
)
from tuner.progress import duration  # noqa: E402
from tuner.recipe import TrialParams  # noqa: E402
from tuner.search.space import build_params, recipe_trials  # noqa: E402

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
UPSTREAM_CLASSES = ("Trouser", "Dress", "Sandal", "Sneaker", "Bag")
DOWNSTREAM_CLASSES = ("T-shirt/top", "Pullover", "Coat", "Shirt", "Ankle boot")
CACHE = REPO / "bench" / ".cache" / "upstream"  # ignored: the weights, the prepared data
RUNS = REPO / "bench" / "runs" / "upstream"  # tracked: recipe.json and the check's runs
DOWNSTREAM = (
    "data.source=fashionmnist",
    f"data.root={FASHION_ROOT}",
    f"data.classes=[{', '.join(DOWNSTREAM_CLASSES)}]",
    "data.per_class=625",  # 500 training + 125 validation photos per class (val_fraction 0.2)
    "data.test_source=auto",  # the official test photos of these classes: 1,000 each
)
"""The downstream task as `tuner search --set` options (the race adds model.weights)."""
DIGITS = ("data.source=digits",)
"""The second downstream task, a domain shift: scikit-learn's 1,797 handwritten digits at 32
px, 10 classes, validation and test held out (20% each), fine-tuned from the same upstream."""
CHECKED = {"fashion": DOWNSTREAM, "digits": DIGITS}
"""The downstream tasks ``check --task`` measures; each keeps its runs in its own folder."""


@dataclass(frozen=True)
class UpstreamRecipe:
    """How the upstream backbone is trained; its hash names the cache folder."""

    objective: str = "mixed"  # supervised, rotation or mixed
    epochs: int = 2
    lr: float = 0.05  # SGD, momentum 0.9, Nesterov, cosine to 0 over the run
    batch_size: int = 128  # per head: mixed steps take one batch of each
    weight_decay: float = 5e-4
    image_size: int = 32
    seed: int = 0
    arch: str = "resnet18"

    @property
    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return f"{self.objective}-{self.key}"

    @property
    def folder(self) -> Path:
        """Where its recipe.json and check runs are kept (tracked)."""
        return RUNS / self.name

    @property
    def weights(self) -> Path:
        return CACHE / self.name / f"{self.arch}.safetensors"


# --- pretraining ------------------------------------------------------------------------------


class TwoHeads(nn.Module):
    """A ResNet backbone with the upstream class head and the rotation head beside it."""

    def __init__(self, arch: str, classes: int) -> None:
        super().__init__()
        self.backbone = torchvision.models.get_model(arch, weights=None)
        width = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.classes = nn.Linear(width, classes)
        self.rotation = nn.Linear(width, 4)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights under torchvision's own names (no ``fc``: tuner adds its own)."""
        return {k: v.detach().contiguous() for k, v in self.backbone.state_dict().items()}


def rotated(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by a random multiple of 90 degrees, and which multiple (the label)."""
    turns = torch.randint(0, 4, (len(images),), generator=generator)
    out = [torch.rot90(x, int(k), dims=(1, 2)) for x, k in zip(images, turns, strict=True)]
    return torch.stack(out), turns


def upstream_data(recipe: UpstreamRecipe, classes: tuple[str, ...] | None) -> PreparedData:
    """All training photos of ``classes`` (None: every class), and their official test photos as
    the validation side (nothing is held out: the upstream is judged on the test photos)."""
    config = DataConfig(
        source="fashionmnist", root=FASHION_ROOT, classes=classes, val_source="test",
        test_source="none", image_size=recipe.image_size, cache_dir=str(CACHE / "data"),
    )  # fmt: skip
    return prepare_data(config, cache_path(config))


def build(recipe: UpstreamRecipe) -> Path:
    """Pretrain (or find cached) the upstream backbone; its weights file."""
    if (recipe.folder / "recipe.json").is_file() and recipe.weights.is_file():
        print(f"upstream: cached in {recipe.weights}", flush=True)
        return recipe.weights
    torch.manual_seed(recipe.seed)
    labelled = upstream_data(recipe, UPSTREAM_CLASSES)
    unlabelled = upstream_data(recipe, None) if recipe.objective != "supervised" else None
    model = TwoHeads(recipe.arch, labelled.num_classes)
    started = time.monotonic()
    _pretrain(model, recipe, labelled, unlabelled)
    seconds = time.monotonic() - started
    model.eval()
    accuracy = _class_accuracy(model, labelled)
    rotation = _rotation_accuracy(model, labelled, recipe.seed)
    recipe.folder.mkdir(parents=True, exist_ok=True)
    recipe.weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.backbone_state(), str(recipe.weights))
    record = {
        "recipe": dataclasses.asdict(recipe),
        "upstream_classes": list(UPSTREAM_CLASSES),
        "upstream_test_accuracy": accuracy,
        "upstream_test_images": len(labelled.val_labels),
        "rotation_test_accuracy": rotation,
        "seconds": round(seconds, 1),
        "sha256": file_sha256(recipe.weights),
        "machine": _machine(),
    }
    (recipe.folder / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"upstream: built {recipe.weights} in {duration(seconds)}: {json.dumps(record)}")
    return recipe.weights


def _pretrain(
    model: TwoHeads, recipe: UpstreamRecipe, labelled: PreparedData, unlabelled: PreparedData | None
) -> None:
    """SGD over ``recipe.epochs`` passes of the labelled images (the rotation objective alone:
    of the unlabelled ones), one batch of each objective per step, with plain progress lines."""
    generator = torch.Generator().manual_seed(recipe.seed)
    pool = unlabelled if recipe.objective == "rotation" else labelled
    steps_per_epoch = len(pool.train_labels) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
        weight_decay=recipe.weight_decay,
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, recipe.lr, total_steps=total, pct_start=0.15
    )
    loss_fn, started, step = nn.CrossEntropyLoss(), time.monotonic(), 0
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(pool.train_labels), generator=generator)
        for batch in order[: steps_per_epoch * recipe.batch_size].split(recipe.batch_size):
            loss = _step_loss(model, recipe, labelled, unlabelled, batch, generator, loss_fn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0 or step == total:
                rate = step / (time.monotonic() - started)
                print(f"upstream: step {step}/{total}, loss {loss.item():.3f}, {rate:.2f} steps/s, "
                      f"ETA {duration((total - step) / rate)}", flush=True)  # fmt: skip


def _step_loss(
    model: TwoHeads,
    recipe: UpstreamRecipe,
    labelled: PreparedData,
    unlabelled: PreparedData | None,
    batch: torch.Tensor,
    generator: torch.Generator,
    loss_fn: nn.Module,
) -> torch.Tensor:
    loss = torch.zeros(())
    if recipe.objective != "rotation":
        images = augment_batch(labelled.train_images[batch], "crop_flip", generator)
        loss = loss + loss_fn(model.classes(model.backbone(images)), labelled.train_labels[batch])
    if unlabelled is not None:
        rows = (
            batch
            if recipe.objective == "rotation"
            else torch.randint(0, len(unlabelled.train_labels), (len(batch),), generator=generator)
        )
        # augmented first, turned after: a mirror of a turned photo would blur 90 with 270
        images = augment_batch(unlabelled.train_images[rows], "crop_flip", generator)
        turned, turns = rotated(images, generator)
        loss = loss + loss_fn(model.rotation(model.backbone(turned)), turns)
    return loss


@torch.no_grad()
def _class_accuracy(model: TwoHeads, data: PreparedData) -> float:
    logits = torch.cat([model.classes(model.backbone(normalize(x)))
                        for x in data.val_images.split(512)])  # fmt: skip
    return (logits.argmax(1) == data.val_labels).float().mean().item()


@torch.no_grad()
def _rotation_accuracy(model: TwoHeads, data: PreparedData, seed: int) -> float:
    turned, turns = rotated(normalize(data.val_images), torch.Generator().manual_seed(seed + 1))
    logits = torch.cat([model.rotation(model.backbone(x)) for x in turned.split(512)])
    return (logits.argmax(1) == turns).float().mean().item()


def _machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")
    return f"{torch.get_num_threads()} threads ({name}), torch {torch.__version__}"


# --- the downstream checks --------------------------------------------------------------------

DEPTHS = (0, 2, 3, 5)  # nothing frozen, stem+layer1, stem+layer1-2, the whole backbone
BACKBONE_LRS = (1e-4, 1e-3)  # the grid a frozen prefix is fine-tuned with (head lr 1e-3)
HEAD_LRS = (1e-3, 1e-2)  # the grid feature extraction is tried with


def downstream_data(task: tuple[str, ...] = DOWNSTREAM) -> PreparedData:
    config = load_config(None, [*task, f"data.cache_dir={CACHE / 'data'}"])
    return prepare_data(config.data, cache_path(config.data), with_test=True)


def check_runs(depth: int) -> list[TrialParams]:
    """The recipes tried at one freeze depth: frozen throughout, Adam, batch 64, 4 epochs."""
    if depth == 5:
        return [TrialParams(5, None, "all", lr, None, "adam", 64, 1e-5) for lr in HEAD_LRS]
    return [TrialParams(depth, None, "all", 1e-3, lr, "adam", 64, 1e-5) for lr in BACKBONE_LRS]


def fine_tune(
    data: PreparedData,
    params: TrialParams,
    weights: str,
    seed: int,
    task: tuple[str, ...],
    hooks: TrainHooks | None = None,
) -> tuple[TrainResult, nn.Module]:
    """One recipe from one start with tuner's engine, on the CPU as a worker runs it (its own
    feature cache); the model comes back holding the best epoch's weights."""
    config = load_config(None, list(task))
    resolved = resolve_weights(params.arch, weights)
    torch.manual_seed(seed)
    model = build_model(params.arch, data.num_classes, resolved)
    environment = TrainEnvironment(
        device=torch.device("cpu"), seed=seed, augment=config.data.augment,
        feature_cache=FeatureCache(config.train.feature_cache_mb << 20),
    )  # fmt: skip
    result = train(model, data, params, config.train, environment, hooks or TrainHooks())
    model.load_state_dict(result.best_state)
    return result, model


def test_correct(model: nn.Module, data: PreparedData) -> np.ndarray:
    """Which official test photos ``model`` gets right."""
    _, predictions = evaluate(model, data.test_images, data.test_labels, torch.device("cpu"), 256)
    return (predictions == data.test_labels).numpy()


def run_check(
    data: PreparedData, params: TrialParams, weights: str, seed: int, task: tuple[str, ...]
) -> dict:
    """One recipe from one start with tuner's engine: best val, its test predictions, time."""
    started = time.monotonic()
    result, model = fine_tune(data, params, weights, seed, task)
    seconds = time.monotonic() - started
    correct = test_correct(model, data)
    packed = stats.pack_correct(correct)
    return {"val": result.best_accuracy, "test": packed, "images": len(correct),
            "seconds": round(seconds, 1)}  # fmt: skip


def classic_recipes() -> list[tuple[str, TrialParams]]:
    """tuner's three classic recipes as the default space runs them (its first trials)."""
    config = load_config(None, list(DOWNSTREAM))
    space, epochs = config.space, config.train.epochs
    runnable, _ = recipe_trials(space, epochs)

    def replayed(params: dict) -> TrialParams:
        return build_params(lambda name, dim: params.get(name, getattr(dim, "value", None)),
                            space, epochs)  # fmt: skip

    return [(recipe.name, replayed(params)) for recipe, params in runnable]


def check_plan(seeds: int) -> list[tuple[str, TrialParams, str, int]]:
    """(name, recipe, start, seed) of every check run: the depth grids from either start, then
    the classic recipes from the upstream."""
    plan = []
    for depth in DEPTHS:
        for params in check_runs(depth):
            lr = params.backbone_lr if params.backbone_lr is not None else params.head_lr
            for seed in range(seeds):
                for start in ("upstream", "none"):
                    plan.append((f"{start}-d{depth}-lr{lr:g}-s{seed}", params, start, seed))
    for recipe, params in classic_recipes():
        plan += [(f"upstream-{recipe}-s{seed}", params, "upstream", seed) for seed in range(seeds)]
    return plan


def check_folder(recipe: UpstreamRecipe, task: str) -> Path:
    """``check/`` for the Fashion-MNIST task (the first), ``check-<task>/`` for the others."""
    return recipe.folder / ("check" if task == "fashion" else f"check-{task}")


def check(recipe: UpstreamRecipe, seeds: int, task: str = "fashion") -> dict:
    """Every check run of ``task``, kept one file each in its folder (resumable)."""
    weights = str(recipe.weights)
    data = downstream_data(CHECKED[task])
    out = check_folder(recipe, task)
    out.mkdir(exist_ok=True)
    plan = check_plan(seeds)
    started, found, ran = time.monotonic(), {}, 0
    for index, (name, params, start, seed) in enumerate(plan, 1):
        path = out / f"{name}.json"
        if not path.is_file():
            start_weights = weights if start == "upstream" else "none"
            result = run_check(data, params, start_weights, seed, CHECKED[task])
            path.write_text(json.dumps(result))
            ran += 1
        found[name] = json.loads(path.read_text())
        rate = (time.monotonic() - started) / max(ran, 1)
        print(f"check: {index}/{len(plan)} {name}: val {found[name]['val']:.4f}, "
              f"{found[name]['seconds']:.0f} s; ETA {duration(rate * (len(plan) - index))}",
              flush=True)  # fmt: skip
    return found


def analyse(recipe: UpstreamRecipe, found: dict, seeds: int, task: str = "fashion") -> str:
    """The check's table: per depth and start, the lr chosen on val, test mean and range over
    seeds, and upstream against random init on test (exact McNemar, pooled over seeds)."""
    record = json.loads((recipe.folder / "recipe.json").read_text())
    images = next(iter(found.values()))["images"]
    lines = [
        f"Downstream task `{task}` (`{' '.join(CHECKED[task])}`), {images} test images.", "",
        f"Upstream `{recipe.name}`: {record['recipe']['objective']} objective, "
        f"{record['recipe']['epochs']} epochs, upstream test accuracy "
        f"{record['upstream_test_accuracy']:.4f} on {record['upstream_test_images']} photos of "
        f"{', '.join(UPSTREAM_CLASSES)}; rotation {record['rotation_test_accuracy']:.4f}; built in "
        f"{duration(record['seconds'])} on {record['machine']}.", "",
        "| freeze depth | start | lr chosen on val | val mean | test mean [range] over seeds "
        "| s per run | upstream vs random init on test (pooled, exact McNemar) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for depth in DEPTHS:
        chosen = {start: _chosen(found, start, depth, seeds) for start in ("upstream", "none")}
        for start, (lr, runs) in chosen.items():
            tests = [_correct(r).mean() for r in runs]
            versus = "-"
            if start == "upstream":
                versus = _versus(runs, chosen["none"][1])
            lines.append(
                f"| {depth} | {'upstream' if start == 'upstream' else 'random init'} | {lr:g} | "
                f"{np.mean([r['val'] for r in runs]):.4f} | {np.mean(tests):.4f} "
                f"[{min(tests):.4f}, {max(tests):.4f}] | "
                f"{np.mean([r['seconds'] for r in runs]):.0f} | {versus} |"
            )
    lines += ["", *_classic_lines(found, seeds)]
    return "\n".join(lines) + "\n"


def _classic_lines(found: dict, seeds: int) -> list[str]:
    """The classic recipes from the upstream: test mean [range] over seeds, each against the
    best-on-val freeze-depth recipe of the grid (pooled, exact McNemar)."""
    lines = [
        "| classic recipe (from the upstream) | val mean | test mean [range] over seeds | "
        "s per run |",
        "| --- | --- | --- | --- |",
    ]
    for recipe, _ in classic_recipes():
        runs = [found[f"upstream-{recipe}-s{s}"] for s in range(seeds)]
        tests = [_correct(r).mean() for r in runs]
        lines.append(
            f"| {recipe} | {np.mean([r['val'] for r in runs]):.4f} | {np.mean(tests):.4f} "
            f"[{min(tests):.4f}, {max(tests):.4f}] | {np.mean([r['seconds'] for r in runs]):.0f} |"
        )
    return lines


def classic_test_correct(recipe: UpstreamRecipe) -> dict[str, list[np.ndarray]]:
    """Each classic recipe's test predictions from the check, one array per seed (in seed
    order), for the benches that set a searched recipe against them."""
    out = check_folder(recipe, "fashion")
    found = {}
    for name, _ in classic_recipes():
        paths = sorted(
            out.glob(f"upstream-{name}-s*.json"), key=lambda p: int(p.stem.rsplit("-s", 1)[1])
        )
        found[name] = [_correct(json.loads(path.read_text())) for path in paths]
    return found


def _chosen(found: dict, start: str, depth: int, seeds: int) -> tuple[float, list[dict]]:
    """The lr of the depth's grid with the best mean val accuracy over seeds, and its runs."""
    grid = HEAD_LRS if depth == 5 else BACKBONE_LRS
    runs = {lr: [found[f"{start}-d{depth}-lr{lr:g}-s{s}"] for s in range(seeds)] for lr in grid}
    lr = max(grid, key=lambda lr: np.mean([r["val"] for r in runs[lr]]))
    return lr, runs[lr]


def _correct(run: dict) -> np.ndarray:
    return stats.unpack_correct(run["test"], run["images"])


def _versus(mine: list[dict], theirs: list[dict]) -> str:
    a = np.concatenate([_correct(r) for r in mine])
    b = np.concatenate([_correct(r) for r in theirs])
    comparison = stats.PairedComparison.of(a, b)
    return f"{comparison.points:+.1f} points ({comparison.evidence()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "check"))
    parser.add_argument("--objective", default="mixed", choices=("supervised", "rotation", "mixed"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="check: seeds per recipe and start")
    parser.add_argument("--out", type=Path, help="check: append the table to this markdown file")
    parser.add_argument("--task", default="fashion", choices=tuple(CHECKED), help="check: which")
    args = parser.parse_args()
    recipe = UpstreamRecipe(objective=args.objective, epochs=args.epochs, seed=args.seed)
    build(recipe)
    if args.command == "check":
        found = check(recipe, args.seeds, args.task)
        table = analyse(recipe, found, args.seeds, args.task)
        print(table)
        append_run(args.out, table)


if __name__ == "__main__":
    main()
