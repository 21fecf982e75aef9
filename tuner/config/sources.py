"""The data sources a study can name (``data.source``): one table of what each one provides.

Plain data, so that the config validates ``data.source`` and its cross-key rules without
importing torch. Everything else reads this table: the data layer loads a source by its
``loader`` kind, the prepared cache lists its files, the model card describes it. A new
torchvision-style dataset is one more line below.
"""

from __future__ import annotations

from dataclasses import dataclass

LOADERS = ("digits", "torchvision", "folder")
"""How the data layer reads a source (``tuner.data.sources`` implements each kind once):
``digits``: scikit-learn's bundled copy of its ``files``; ``torchvision``: the class
``torchvision.datasets.<torchvision_class>`` reading ``files`` in ``folder`` under
``data.root``; ``folder``: an image-folder tree at ``data.path``."""

TEST_SPLITS = ("always", "never", "if_present")
"""Whether a source has its own test split: ``always`` (an official one: ``data.val_source:
test`` may take it), ``never`` (``data.test_source: auto`` holds one out instead), or
``if_present`` (the tree's ``test/`` folder, known only once it is listed)."""


@dataclass(frozen=True)
class SourceInfo:
    """One data source: what it is called, how it is read, where its files are, what it offers.

    ``card`` is the model card's "Source:" sentence, formatted with ``title``, ``root``
    (``data.root``) and ``path`` (``data.path``). ``originals`` are the files as their authors
    publish them (the MNIST family's gzipped idx files), read straight from ``data.root`` where
    torchvision's ``folder`` is absent: Debian's ``dataset-fashion-mnist`` installs them so.
    ``package`` names the Debian package that installs them, for the missing-files message.
    """

    name: str
    title: str
    loader: str
    test_split: str
    card: str
    torchvision_class: str | None = None
    folder: str = ""
    files: tuple[str, ...] = ()
    originals: tuple[str, ...] = ()
    package: str | None = None

    @property
    def needs_path(self) -> bool:
        """Whether the source is read from ``data.path`` (an image-folder tree)."""
        return self.loader == "folder"

    def describe(self, root: str, path: str | None) -> str:
        """The model card's words for this source under the given ``data.root``/``data.path``."""
        return self.card.format(title=self.title, root=root, path=path)


def _torchvision(
    name: str,
    title: str,
    torchvision_class: str,
    folder: str,
    files: tuple[str, ...],
    originals: tuple[str, ...] = (),
    package: str | None = None,
) -> SourceInfo:
    """A torchvision dataset: its files in ``folder`` under ``data.root`` (or its ``originals``
    in ``data.root`` itself), its official test set."""
    card = "torchvision {title} under `{root}`"
    return SourceInfo(
        name, title, "torchvision", "always", card, torchvision_class, folder, files,
        originals, package,
    )  # fmt: skip


_MNIST_FILES = tuple(
    f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
)
_MNIST_ORIGINALS = tuple(f"{name}.gz" for name in _MNIST_FILES)
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")

DATA_SOURCES: dict[str, SourceInfo] = {
    info.name: info
    for info in (
        SourceInfo(
            "digits",
            "scikit-learn digits",
            "digits",
            "never",
            "scikit-learn's bundled handwritten digits (8x8 px)",
            files=("digits.csv.gz",),
        ),
        _torchvision("cifar10", "CIFAR-10", "CIFAR10", "cifar-10-batches-py", _CIFAR10_FILES),
        _torchvision(
            "cifar100", "CIFAR-100", "CIFAR100", "cifar-100-python", ("train", "test", "meta")
        ),
        _torchvision("mnist", "MNIST", "MNIST", "MNIST/raw", _MNIST_FILES, _MNIST_ORIGINALS),
        _torchvision(
            "fashionmnist",
            "Fashion-MNIST",
            "FashionMNIST",
            "FashionMNIST/raw",
            _MNIST_FILES,
            _MNIST_ORIGINALS,
            "dataset-fashion-mnist",
        ),
        SourceInfo("folder", "image folder", "folder", "if_present", "image folder `{path}`"),
    )
}
"""Every ``data.source``, in the order messages list them."""
