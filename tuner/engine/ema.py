"""An exponential moving average of a model's weights (timm's ``--model-ema``).

The average is what a run with ``ema`` on evaluates, keeps as its best epoch and exports:
averaging the last steps' weights smooths out the noise of the final updates, which often
generalises better than the raw weights at no inference cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class WeightEma:
    """The running average of every floating-point tensor of a model's state dict.

    Parameters and BatchNorm's running statistics are averaged alike; integer buffers (the
    batch counters) are copied. The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after
    n updates, as timm's warm-up does, so that a short run averages its recent steps instead
    of staying near its random start.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        own = model.state_dict()
        self.shadow = {k: v.detach().clone() for k, v in own.items()}
        # Paired once: a state dict's tensors share their storage with the model's, and every
        # later write (optimizer, load_state_dict, applied) is in place, so the pairs stay true
        # and a step costs two foreach calls instead of a walk over the state dict.
        self._model = model
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        counters = [k for k, v in self.shadow.items() if not v.is_floating_point()]
        self._floats = ([self.shadow[k] for k in floats], [own[k] for k in floats])
        self._counters = ([self.shadow[k] for k in counters], [own[k] for k in counters])

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's weights after an optimizer step.

        ``model`` must be the one the average was made from (its tensors were paired then).
        """
        if model is not self._model:
            raise ValueError("WeightEma.update got another model than the one it averages")
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(*self._floats, 1.0 - decay)
        if self._counters[0]:
            torch._foreach_copy_(*self._counters)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside: ``model`` holds the averaged weights; after: its own again, untouched."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict[str, object]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])  # type: ignore[arg-type]
        shadow: dict[str, Tensor] = state["shadow"]  # type: ignore[assignment]
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
