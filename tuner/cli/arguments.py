"""Each command's options, and the options several commands share (defined once each)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def shared_options() -> dict[str, argparse.ArgumentParser]:
    """Options several commands take, each defined once in a parent parser (``parents=``)."""
    shared = {
        name: argparse.ArgumentParser(add_help=False)
        for name in ("study", "storage", "artifacts", "gpus", "device", "warm_start")
    }
    shared["study"].add_argument(
        "--study", help="study name (default: the only one in the storage)"
    )
    shared["storage"].add_argument(
        "--storage",
        help="study storage URL (default: $TUNER_STORAGE or "
        "sqlite:///tuner.db in the current directory)",
    )
    shared["artifacts"].add_argument(
        "--artifacts",
        help="checkpoint store: a folder, file:///shared/path or s3://bucket/prefix "
        "(default: $TUNER_ARTIFACTS or tuner-artifacts/ in the current directory)",
    )
    shared["gpus"].add_argument(
        "--gpus",
        metavar="LIST",
        help="one worker per listed GPU, e.g. --gpus 0,1,2,3: numbers as this process sees them "
        "(within CUDA_VISIBLE_DEVICES when set) or UUIDs from nvidia-smi -L",
    )
    shared["gpus"].add_argument(
        "--per-gpu", type=int, default=1, metavar="K", help="workers per GPU with --gpus (1)"
    )
    shared["device"].add_argument(
        "--device", help="override the study's train.device on this host (cpu, cuda, cuda:1)"
    )
    warm = shared["warm_start"]
    warm.add_argument("--warm-start", metavar="STUDY[,STUDY...]",
                      help="a new study first runs the best recipes of these earlier studies "
                      "that fit its space")  # fmt: skip
    warm.add_argument("--warm-start-storage", metavar="URL",
                      help="where the --warm-start studies are (default: --storage)")  # fmt: skip
    warm.add_argument("--warm-start-top", type=int, metavar="N",
                      help="best complete trials taken from each of them (3)")  # fmt: skip
    return shared


def search_arguments(search: argparse.ArgumentParser) -> None:
    search.add_argument("config", nargs="?", type=Path, help="study YAML (default: built-in)")
    search.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.path=/data/pets",
    )
    search.add_argument("--trials", type=int, help="finished trials the study should end with")
    search.add_argument(
        "--minutes", type=float,
        help="wall-clock budget of this run, confirm included: trials stop starting in time",
    )  # fmt: skip
    # not the shared --study: a new search names its study itself
    search.add_argument("--study", help="study name (default: search.study, or the file name)")
    search.add_argument(
        "--workers", type=int, help="worker processes on this host's default device (default 1)"
    )
    search.add_argument(
        "--queue", action="store_true",
        help="create and check the study, queue it for `tuner serve` pools and return at once",
    )  # fmt: skip
    search.add_argument("--priority", type=int, metavar="P",
                        help="with --queue: pools serve higher priorities first (0)")  # fmt: skip


def prepare_arguments(prepare: argparse.ArgumentParser) -> None:
    prepare.add_argument("config", nargs="?", type=Path, help="study YAML (default: built-in)")
    prepare.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def config_arguments(config: argparse.ArgumentParser) -> None:
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the full resolved config: of a study YAML (default: the built-in one) with "
        "--set, or the one a stored study holds (--study, --storage)",
        parents=[shared_options()["storage"]],
    )
    show.add_argument("config", nargs="?", type=Path, help="study YAML (default: built-in)")
    show.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    show.add_argument("--study", help="a stored study (default with --storage: the only one there)")


def submit_arguments(submit: argparse.ArgumentParser) -> None:
    submit.add_argument(
        "config", nargs="?", type=Path, help="study YAML: create the study from it first"
    )
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of the study to create")  # fmt: skip
    submit.add_argument("--trials", type=int, help="the study's budget of finished trials")
    submit.add_argument("--workers", type=int, required=True, help="array tasks: one worker each")
    submit.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    submit.add_argument("--gpus-per-worker", type=int, default=0, metavar="G",
                        help="GPUs per task (--gpus-per-task: CUDA_VISIBLE_DEVICES)")  # fmt: skip
    submit.add_argument("--cpus-per-worker", type=int, default=1, metavar="C")
    submit.add_argument("--mem", metavar="M", help="memory per task, e.g. 32G")
    submit.add_argument("--time", metavar="T", help="time limit per task, e.g. 12:00:00")
    submit.add_argument("--grace", type=int, default=120, metavar="S",
                        help="seconds between SIGTERM and the time limit (120)")  # fmt: skip
    submit.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="an extra sbatch option, e.g. --sbatch-arg=--qos=high")  # fmt: skip
    submit.add_argument("--logs", type=Path, help="task logs (default: tuner-logs/STUDY/slurm)")
    submit.add_argument("--dry-run", action="store_true", help="print the batch script only")
    submit.add_argument("--pool", action="store_true",
                        help="tasks that serve every queued study (tuner serve), not one study; "
                        "a CONFIG given is created and queued")  # fmt: skip
    submit.add_argument("--idle-exit", type=float, metavar="MINUTES",
                        help="with --pool: a task ends once no queued study has had work for "
                        "this long")  # fmt: skip
    submit.add_argument(
        "--priority",
        type=int,
        metavar="P",
        help="with --pool: the CONFIG's study is queued at this priority (0)",
    )


def worker_arguments(worker: argparse.ArgumentParser) -> None:
    """Set by the local launcher for the processes it starts, so hidden from --help."""
    worker.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)


def serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--workers", type=int, help="pool worker processes on this host's default device (1)"
    )
    serve.add_argument("--idle-exit", type=float, metavar="MINUTES",
                       help="exit once no queued study has had work for this long "
                       "(default: serve until stopped)")  # fmt: skip
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--threads", type=int, help=argparse.SUPPRESS)


def queue_arguments(queue: argparse.ArgumentParser) -> None:
    queue.add_argument(
        "action", nargs="?", default="list", choices=("list", "pause", "resume", "cancel", "set"),
        help="list (default); pause, resume or cancel STUDY; set STUDY's --priority/--trials",
    )  # fmt: skip
    queue.add_argument("name", nargs="?", metavar="STUDY", help="the queued study to change")
    queue.add_argument("--priority", type=int, metavar="P", help="with set: its new priority")
    queue.add_argument("--trials", type=int, metavar="N", help="with set: its new budget")


def status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--csv", type=Path, help="also write the trials table to this CSV file")


def export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("--trial", type=int, help="export this trial number instead of the best")
    export.add_argument("--out", type=Path, default=Path("best"), help="output folder (best/)")
    export.add_argument("--force", action="store_true", help="replace an existing output folder")
    export.add_argument(
        "--format",
        default="safetensors",
        help="comma-separated: safetensors (always written), torchscript, onnx "
        "(needs the onnx extra); default safetensors",
    )
    export.add_argument(
        "--confirmed",
        action="store_true",
        help="export the winner of `tuner confirm` (best mean over fresh seeds)",
    )
    export.add_argument(
        "--refit",
        action="store_true",
        help="retrain the recipe on training + validation images for its best number of "
        "epochs and export that, tested beside the search's own checkpoint",
    )
    export.add_argument(
        "--soup",
        type=_whole_number("a whole number of 1 or more", 1),
        metavar="K",
        help="export a greedy soup: the weights of up to K top trials averaged, each kept only "
        "if val accuracy does not drop (needs search.keep_checkpoints >= K), tested beside the "
        "best single trial",
    )


def _whole_number(what: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (up to ``high``); else "'x' is not {what}"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def confirm_arguments(confirm: argparse.ArgumentParser) -> None:
    confirm.add_argument("--top", type=int, default=3, help="how many top trials to re-train (3)")
    confirm.add_argument("--seeds", type=int, default=3, help="fresh seeds per trial (3)")


def dashboard_arguments(dashboard: argparse.ArgumentParser) -> None:
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    dashboard.add_argument(
        "--port",
        type=_whole_number("a port: give a number from 1 to 65535", 1, 65535),
        default=8080,
        help="port to listen on (8080)",
    )


def report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument(
        "--out", type=Path, default=Path("report"), help="output folder (report/; created)"
    )


def predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument(
        "model_dir", type=Path, metavar="MODEL_DIR", help="folder written by export-best"
    )
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files; folders are walked"
    )
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (3)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line and image")
