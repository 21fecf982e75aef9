"""MODEL_CARD.md: an export folder described for the people who will use the model.

The card is rendered from the folder's own config.json and metrics.json, so it cannot say
anything the export's machine-readable files do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuner import config as config_mod
from tuner.config import DATA_SOURCES, DataConfig, ResolvedWeights
from tuner.engine import file_sha256
from tuner.recipe import TrialParams, describe_schedule
from tuner.search.attrs import params_from_record

CARD_FILE = "MODEL_CARD.md"


def render(folder: Path, shown: Path) -> str:
    """The card for the export in ``folder``; code snippets load it from ``shown``.

    ``shown`` is the path users gave (``--out``), as the folder is written elsewhere first.
    """
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    study = config_mod.from_dict(config["study_config"])
    params = params_from_record(config["params"], study.space)
    sections = [
        f"# {config['arch']} fine-tuned by tuner: study {config['study_name']!r}, "
        f"trial #{config['trial_number']}",
        _data_section(study.data, config),
        _recipe_section(study, params, config),
        _test_section(config),
        _accuracy_section(config, metrics),
        _files_section(folder, config),
        _usage_section(config, shown),
    ]
    return "\n\n".join(sections) + "\n"


def _data_section(data: DataConfig, config: dict[str, Any]) -> str:
    counts = config["data"]
    source = DATA_SOURCES[data.source].describe(data.root, data.path)
    if data.val_source == "test":
        validation = "the dataset's test split"
    else:
        validation = (
            f"a stratified holdout of {data.val_fraction:.0%} of each class "
            f"(split seed {data.split_seed})"
        )
    test = config["test"]
    if counts["test_images"]:
        testing = f"{counts['test_images']} test, held out of the search ({test['split']})"
    else:
        testing = "no test split (`data.test_source: none`)"
    lines = [
        "## Data",
        "",
        f"* Source: {source}.",
        f"* Classes ({config['num_classes']}): {', '.join(config['class_names'])}.",
        f"* Images: {counts['train_images']} training, {counts['val_images']} validation, "
        f"{testing}; validation is {validation}.",
    ]
    if data.classes is not None:
        lines.append(f"* Kept classes: {', '.join(data.classes)} (`data.classes`).")
    if data.relabel is not None:
        merged = "; ".join(f"{new} = {' + '.join(olds)}" for new, olds in data.relabel)
        lines.append(f"* Merged classes: {merged} (`data.relabel`).")
    if data.per_class is not None:
        lines.append(f"* At most {data.per_class} images per class (`data.per_class`).")
    lines.append(
        f"* Image size: {config['image_size']} px (shorter side resized, centre crop); "
        f"training augmentation: {data.augment}."
    )
    return "\n".join(lines)


def _recipe_section(
    study: config_mod.StudyConfig, params: TrialParams, config: dict[str, Any]
) -> str:
    train = study.train
    extras = [f"{train.lr_schedule} learning-rate schedule"]
    if train.grad_clip is not None:
        extras.append(f"gradient norm clipped at {train.grad_clip}")
    if study.data.class_weights == "auto":
        extras.append("inverse-frequency class weights")
    weights = ResolvedWeights.from_dict(config["resolved_weights"])
    refit = config["refit"]
    if config["soup"] is not None:
        trained = _soup_sentence(config["soup"], config["best_epoch"])
    elif refit is None:
        trained = (
            f"the exported weights are from epoch {config['best_epoch']}, the best on validation."
        )
    else:
        trained = (
            f"the exported weights are a refit: the recipe trained again on the "
            f"{refit['train_images']} training + validation images for its best "
            f"{refit['epochs']} epoch(s) (epochs 0..{config['best_epoch']}), seed {refit['seed']}."
        )
    return "\n".join(
        [
            "## Recipe",
            "",
            f"* {describe_schedule(params, train.epochs)}.",
            f"* {train.epochs} epochs (numbered from 0), {', '.join(extras)}; {trained}",
            f"* Starting weights: {weights.describe()}.",
            f"* Found by an Optuna search: study {config['study_name']!r}, "
            f"trial #{config['trial_number']}.",
        ]
    )


def _test_section(config: dict[str, Any]) -> str:
    """The one accuracy that is not optimistic: on images nothing in the search read."""
    test = config["test"]
    if "accuracy" not in test:
        return (
            "## Test accuracy\n\nNone: the study keeps no held-out test split "
            "(`data.test_source: none`), so the only accuracy below is the validation accuracy "
            "the search selected on, which is optimistic by construction."
        )
    low, high = test["ci95"]
    lines = [
        "## Test accuracy",
        "",
        f"**{_percent(test['accuracy'])}** ({test['correct']} of {test['images']} test images; "
        f"95% interval {_percent(low)} to {_percent(high)}, Wilson), measured once on export. "
        f"The test images are {test['split']} and nothing in the search or in `tuner confirm` "
        "read them, so unlike the validation accuracy below, which the search selected on, "
        "this number is not optimistic by construction.",
    ]
    if "search_checkpoint" in test:
        searched, versus = test["search_checkpoint"], test["refit_vs_search"]
        verdict = "significant" if versus["p_value"] < 0.05 else "not significant"
        lines += [
            "",
            f"The search's own checkpoint of this trial scored {_percent(searched['accuracy'])} "
            f"({searched['correct']} of {searched['images']}) on the same images; the refit "
            f"differs by {versus['points']:+.1f} points ({versus['only_a_right']} images only "
            f"the refit got right, {versus['only_b_right']} only the checkpoint; exact McNemar "
            f"p = {versus['p_value']:.2g}, {verdict}).",
        ]
    return "\n".join([*lines, *_soup_test_lines(config["soup"])])


def _soup_sentence(soup: dict[str, Any], best_epoch: int) -> str:
    """What a greedy soup's weights are, for the recipe section (whose recipe is the best's)."""
    kept = ", ".join(f"#{item['trial']}" for item in soup["ingredients"])
    rejected = ", ".join(f"#{number}" for number in soup["rejected"]) or "none"
    greedy = (
        f"a greedy soup (Wortsman et al., 2022) tried the top {len(soup['tried'])} "
        f"{soup['arch']} trials in order of val accuracy, each kept only if the soup's val "
        f"accuracy did not drop (rejected: {rejected})"
    )
    if len(soup["ingredients"]) == 1:
        return (
            f"{greedy}, so the exported weights are trial {kept}'s own, from epoch {best_epoch}, "
            "the best on validation."
        )
    statistics = (
        f"BatchNorm statistics re-estimated on the {soup['bn_images']} training images in "
        f"{len(soup['bn_layers'])} layers where the trials' differed"
        if soup["bn_recomputed"]
        else "BatchNorm statistics the same in every trial"
    )
    return (
        f"{greedy}: the exported weights are the uniform average of the best-epoch weights of "
        f"trials {kept}, {statistics}. The recipe above is that of trial "
        f"#{soup['val']['best_single_trial']}, the best single trial."
    )


def _soup_test_lines(soup: dict[str, Any] | None) -> list[str]:
    """The soup beside the best single trial on the same test images."""
    if soup is None or "test" not in soup:
        return []
    single, versus = soup["test"]["best_single"], soup["test"]["soup_vs_best_single"]
    verdict = "significant" if versus["p_value"] < 0.05 else "not significant"
    return [
        "",
        f"The best single trial, #{soup['val']['best_single_trial']}, scored "
        f"{_percent(single['accuracy'])} ({single['correct']} of {single['images']}) on the "
        f"same images; the soup differs by {versus['points']:+.1f} points "
        f"({versus['only_a_right']} images only the soup got right, {versus['only_b_right']} "
        f"only the single trial; exact McNemar p = {versus['p_value']:.2g}, {verdict}).",
    ]


def _accuracy_section(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    matrix = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    train_counts = config["data"]["train_per_class"]
    rows = [
        f"| {name} | {train_counts[i]} | {sum(matrix[i])} | {matrix[i][i]} | "
        f"{_percent(metrics['per_class_accuracy'][name])} |"
        for i, name in enumerate(config["class_names"])
    ]
    return "\n".join(
        [
            "## Validation accuracy",
            "",
            f"{_percent(config['val_accuracy'])} re-measured on export "
            f"({config['data']['val_images']} images); "
            f"{_percent(config['recorded_val_accuracy'])} recorded by the search"
            + (
                ". The refit trained on these images: its validation accuracy is no measure."
                if config["refit"]
                else ". The soup chose its ingredients on these images, so this accuracy is "
                "optimistic; the test accuracy above is the fair one."
                if config["soup"]
                else "."
            ),
            *_confirmation_lines(metrics.get("confirmation")),
            "",
            "| class | training images | validation images | correct | accuracy |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )


def _confirmation_lines(confirmation: dict[str, Any] | None) -> list[str]:
    """What `tuner confirm` found, when this export is its winner."""
    if confirmation is None:
        return []
    seeds = ", ".join(_percent(v) for v in confirmation["seed_val_accuracies"])
    run = confirmation["exported_run"]
    return [
        "",
        f"Confirmed with {len(confirmation['seed_val_accuracies'])} fresh seeds "
        f"(`tuner confirm`): mean {_percent(confirmation['mean'])}, "
        f"std {100 * confirmation['std']:.2f} points ({seeds}); the search's own run scored "
        f"{_percent(confirmation['original_val_accuracy'])}. {confirmation['verdict']} "
        f"These weights are the run whose best epoch is nearest the epoch at which the runs' "
        f"mean curve peaks (epoch {confirmation['mean_curve_best_epoch']}): study "
        f"`{run['study']}`, trial #{run['trial']}, epoch {run['best_epoch']}.",
    ]


def _files_section(folder: Path, config: dict[str, Any]) -> str:
    rows = [
        f"| `{entry['file']}` | {name} | {entry['argmax_agreeing']}/{entry['images']} same "
        f"predictions, max logit difference {entry['max_abs_logit_diff']:.1e} | "
        f"`{entry['sha256']}` |"
        for name, entry in config["formats"].items()
    ]
    for name, what in (
        ("config.json", "classes, preprocessing, recipe, study config, versions"),
        ("metrics.json", "per-epoch curves, per-class accuracy, confusion matrix"),
    ):
        rows.append(f"| `{name}` | JSON | {what} | `{file_sha256(folder / name)}` |")
    return "\n".join(
        [
            "## Files",
            "",
            "Each model file was loaded back and run on the validation images before export, "
            "next to the PyTorch model it was written from.",
            "",
            "| file | format | content, or check against PyTorch | SHA-256 |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )


def _usage_section(config: dict[str, Any], shown: Path) -> str:
    size, mean, std = config["image_size"], config["mean"], config["std"]
    blocks = [
        "## How to use it",
        "",
        "With tuner installed (`preprocess` takes paths, PIL images or uint8 tensors):",
        "",
        "```python",
        "import tuner",
        f'model, preprocess = tuner.load_model("{shown}")[:2]',
        'probs = model(preprocess(["photo.jpg"])).softmax(1)',
        "```",
        "",
        f"Every model file takes float32 `[N, 3, {size}, {size}]` RGB images, scaled to 0..1 and "
        f"normalised with mean {mean} and std {std}, and returns logits `[N, "
        f"{config['num_classes']}]` in the class order above. Without tuner, prepare images "
        "with torchvision (tuner also applies the EXIF orientation and puts transparent "
        "pixels on white):",
        "",
        "```python",
        "import torch",
        "from PIL import Image",
        "from torchvision.transforms import v2",
        "prepare = v2.Compose([",
        f"    v2.PILToTensor(), v2.Resize({size}, antialias=True), v2.CenterCrop({size}),",
        f"    v2.ToDtype(torch.float32, scale=True), v2.Normalize({mean}, {std}),",
        "])",
        'x = prepare(Image.open("photo.jpg").convert("RGB"))[None]',
        "```",
    ]
    formats = config["formats"]
    if "torchscript" in formats:
        blocks += [
            "",
            "TorchScript (torch marks `torch.jit` deprecated, but it still loads):",
            "",
            "```python",
            f'scripted = torch.jit.load("{shown}/{formats["torchscript"]["file"]}")',
            "probs = scripted(x).softmax(1)",
            "```",
        ]
    if "onnx" in formats:
        blocks += [
            "",
            "ONNX Runtime (input `images`, output `logits`):",
            "",
            "```python",
            "import onnxruntime",
            f'session = onnxruntime.InferenceSession("{shown}/{formats["onnx"]["file"]}")',
            'probs = torch.from_numpy(session.run(None, {"images": x.numpy()})[0]).softmax(1)',
            "```",
        ]
    return "\n".join(blocks)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
