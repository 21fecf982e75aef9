"""The plain way: the same search written as the fine-tuning notebooks would write it.

Run from the repository root:

    python bench/reference_search.py [--trials 20] [--epochs 4]

What makes it "plain", on purpose (this is the yardstick, not a product):

* the images are PNG files on disk (an ImageFolder tree, as the notebooks' datasets are),
  decoded with PIL and transformed with torchvision transforms (Resize, RandomHorizontalFlip,
  ToTensor, Normalize) in a torch DataLoader, every batch of every epoch of every trial;
* every step runs the full model forward; frozen layers only have ``requires_grad = False``;
  unfreezing builds a new optimizer;
* Optuna with its default TPE sampler and a MedianPruner.

What it shares with `tuner search` on the default study: the data (scikit-learn's digits, a
stratified 80/20 split), the image size (32 px), ResNet-18 with the same starting weights
(ImageNet if torchvision can load them, else random init), flips as augmentation, the search
space (``tuner.search.space.sample`` over the default space without the tricks it does not
implement, :data:`PLAIN_SPACE`, so the same dimensions and ranges),
cosine learning-rate decay per epoch, the epochs per trial and the trial budget.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402

from tuner.config import Fixed, SpaceConfig  # noqa: E402
from tuner.recipe import DIMENSIONS  # noqa: E402
from tuner.search.space import sample  # noqa: E402

IMAGE_SIZE = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class ReferenceResult:
    trials: int
    seconds: float
    best_accuracy: float
    complete: int
    pruned: int
    epochs_run: int


PLAIN_SPACE = SpaceConfig(
    **{name: Fixed(info.classic) for name, info in DIMENSIONS.items() if info.words is not None}
)
"""tuner's default space without the recipe tricks a plain training loop leaves out (layer
decay, warm-up, label smoothing, mixup, cutmix, EMA, the BatchNorm policy), each fixed at off:
a peer never samples a dimension it would ignore."""


def write_digits(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """scikit-learn's digits as PNG files: folder/train/<digit>/*.png and folder/val/..."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    index = np.arange(len(images))
    train, val = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=seed)
    for split, members in (("train", train), ("val", val)):
        for i in members:
            path = folder / split / str(digits.target[i]) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").convert("RGB").save(path)
    return folder / "train", folder / "val"


def loaders(train_dir: Path, val_dir: Path, batch_size: int) -> tuple[DataLoader, DataLoader]:
    train_tf = transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    val_tf = transforms.Compose(
        [transforms.Resize(IMAGE_SIZE), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    train_set = torchvision.datasets.ImageFolder(str(train_dir), transform=train_tf)
    val_set = torchvision.datasets.ImageFolder(str(val_dir), transform=val_tf)
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True),
        DataLoader(val_set, batch_size=256, shuffle=False),
    )


def pretrained_state() -> dict | None:
    """ImageNet weights once per search, or None (offline: tuner's ``weights: auto`` fallback)."""
    try:
        return torchvision.models.ResNet18_Weights.DEFAULT.get_state_dict(progress=False)
    except Exception:
        return None


def new_model(state: dict | None, num_classes: int = 10) -> nn.Module:
    """ResNet-18 from ``state`` (any head it has is dropped) with a new head."""
    model = torchvision.models.resnet18(weights=None)
    if state is not None:
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing = model.load_state_dict(backbone, strict=False).missing_keys
        assert all(key.startswith("fc.") for key in missing), missing
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def stage(model: nn.Module, name: str) -> list[nn.Module]:
    return [model.conv1, model.bn1] if name == "stem" else [getattr(model, name)]


def freeze(model: nn.Module, depth: int) -> None:
    for index, name in enumerate(STAGES):
        for module in stage(model, name):
            for p in module.parameters():
                p.requires_grad = index >= depth


def make_optimizer(model: nn.Module, params, depth: int) -> torch.optim.Optimizer:
    groups = [{"params": model.fc.parameters(), "base_lr": params.head_lr}]
    for name in STAGES[depth:]:
        for module in stage(model, name):
            groups.append({"params": module.parameters(), "base_lr": params.backbone_lr})
    if params.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=params.weight_decay)
    kind = torch.optim.Adam if params.optimizer == "adam" else torch.optim.AdamW
    return kind(groups, weight_decay=params.weight_decay)


def depth_at(params, epoch: int) -> int:
    if params.unfreeze_epoch is None or epoch < params.unfreeze_epoch:
        return params.freeze_depth
    if params.unfreeze_mode == "all":
        return 0
    return max(0, params.freeze_depth - (epoch - params.unfreeze_epoch + 1))


def train_epoch(model, loader, optimizer, criterion) -> float:
    model.train()
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * inputs.size(0)
    return total / len(loader.dataset)


def evaluate(model, loader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, targets in loader:
            correct += (model(inputs).argmax(1) == targets).sum().item()
    return correct / len(loader.dataset)


def objective_for(
    train_dir: Path,
    val_dir: Path,
    epochs: int,
    counter: list[int],
    state,
    num_classes: int = 10,
    seed: int = 0,
    on_best=None,
):
    """The objective; ``on_best(trial, value, best_state)`` hears of every completed trial."""

    def objective(trial: optuna.Trial) -> float:
        params = sample(trial, PLAIN_SPACE, epochs)
        torch.manual_seed(seed * 1000 + trial.number)
        model = new_model(state, num_classes)
        train_loader, val_loader = loaders(train_dir, val_dir, params.batch_size)
        criterion = nn.CrossEntropyLoss()
        depth = params.freeze_depth
        freeze(model, depth)
        optimizer = make_optimizer(model, params, depth)
        best, best_state = 0.0, None
        for epoch in range(epochs):
            if depth_at(params, epoch) != depth:
                depth = depth_at(params, epoch)
                freeze(model, depth)
                optimizer = make_optimizer(model, params, depth)
            factor = 0.5 * (1 + math.cos(math.pi * epoch / epochs))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            train_epoch(model, train_loader, optimizer, criterion)
            accuracy = evaluate(model, val_loader)
            counter[0] += 1
            if accuracy > best and on_best is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = max(best, accuracy)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        if on_best is not None:
            on_best(trial, best, best_state)
        return best

    return objective


def run(trials: int, epochs: int = 4, seed: int = 0) -> ReferenceResult:
    """The whole reference search in a fresh temporary folder; timed from the PNG files on."""
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, val_dir = write_digits(Path(tmp))
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        )
        counter = [0]
        started = time.perf_counter()
        objective = objective_for(train_dir, val_dir, epochs, counter, pretrained_state())
        study.optimize(objective, n_trials=trials)
        seconds = time.perf_counter() - started
    states = [t.state for t in study.trials]
    return ReferenceResult(
        trials=len(study.trials),
        seconds=seconds,
        best_accuracy=study.best_value,
        complete=states.count(optuna.trial.TrialState.COMPLETE),
        pruned=states.count(optuna.trial.TrialState.PRUNED),
        epochs_run=counter[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = run(args.trials, args.epochs)
    print(result)


if __name__ == "__main__":
    main()
