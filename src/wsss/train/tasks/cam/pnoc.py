"""P-NOC: P-OC against a "not-so-ordinary" classifier that learns what the generator misses.

The generator ``f`` is trained with the P-OC loss, the NOC in place of the frozen OC. The NOC
starts from the OC checkpoint with its normalisation layers frozen, as the reference builds it:
BatchNorm on its running statistics and every norm layer's affine γ/β with
``requires_grad=False`` (so its optimiser leaves them out; ``noc_norm_affine="trainable"``
lets γ/β train, as ``wsss`` did before following the reference). The rest of the NOC trains,
with
its own optimiser (the four groups, poly schedule, lr × ``lr_alpha_oc``) and AMP scaler.
Every ``k_noc`` steps it is trained on the hard-erased image ``x̂ = x ⊙ [ψ(A_r) ≤ δ_noc]``
(ReLU, bilinear upsampling, per-image max normalisation; from the generator's detached maps of
the same step and the same ``r``) to still find every class: ``λ_noc · ℓ(noc(x̂), LS y)`` with
the full label, ``λ_noc = ramp(0, 1, 1)`` (METHODS.md §2; P-NOC paper §3.2, Algorithm 1).

``noc_schedule`` (with ``k_noc > 1``):
    ``paper`` (default, Algorithm 1): the NOC steps at ``t`` with ``t % k_noc == 0``
    (``t = 0, k, 2k, …``). ``code`` (the published code): at ``(t + 1) % k_noc == 0``
    (``t = k − 1, 2k − 1, …``). The NOC's poly schedule spans its own number of steps.

``hard_mask_order``:
    ``upsample_first`` (default, the published code): ReLU, upsample, then normalise.
    ``normalize_first``: normalise the small map, then upsample (erases slightly fewer pixels).

``noc_grad`` (METHODS.md §2):
    ``reference`` (default, the published code): the generator's backward also reaches the
    NOC's parameters, leaving ``∇_noc(λ_cse · L_cse)`` in its gradients, which the NOC's
    step then applies with its own loss's (accumulated over ``k_noc`` steps when
    ``k_noc > 1``; under float16 AMP they carry the generator's loss scale).
    ``isolated`` (the paper's Algorithm 1): the generator's pass uses detached copies of the
    NOC's parameters, so gradients reach the erasing mask but never the NOC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call

from wsss.config import Config
from wsss.data.loader import Batch
from wsss.errors import ConfigError
from wsss.models.classifier import NORM_LAYERS
from wsss.train.tasks.base import LossOutput, Phase, StepContext
from wsss.train.tasks.cam.base import STRATEGIES
from wsss.train.tasks.cam.functional import check_ramp, hard_erase_keep
from wsss.train.tasks.cam.occse import load_ordinary_classifier
from wsss.train.tasks.cam.poc import POC, POCArgs

__all__ = ["PNOC", "PNOCArgs"]


@dataclass
class PNOCArgs(POCArgs):
    """Settings of P-NOC: those of :class:`~wsss.train.tasks.cam.poc.POCArgs` and

    Attributes:
        k_noc: The NOC is updated once every ``k_noc`` steps (see ``noc_schedule``).
        noc_schedule: ``paper`` (steps ``t % k_noc == 0``) or ``code`` (steps
            ``(t + 1) % k_noc == 0``); see the module docstring.
        delta_noc: δ_noc; pixels whose normalised CAM ψ exceeds it are erased for the NOC.
        hard_mask_order: ``upsample_first`` (the reference) or ``normalize_first``; see
            :func:`~wsss.train.tasks.cam.functional.hard_erase_keep`.
        lambda_noc: ``(start, end, fraction)`` of the ramp of the NOC-loss weight λ_noc.
        lr_alpha_oc: The NOC's learning rate is ``train.lr`` times this.
        noc_grad: ``reference`` or ``isolated`` (see the module docstring).
        noc_norm_affine: ``frozen`` (the reference) or ``trainable``: whether the NOC's norm
            layers' γ/β train (their running statistics stay frozen either way).
    """

    k_noc: int = 1
    noc_schedule: Literal["paper", "code"] = "paper"
    delta_noc: float = 0.2
    hard_mask_order: Literal["upsample_first", "normalize_first"] = "upsample_first"
    lambda_noc: tuple[float, float, float] = (0.0, 1.0, 1.0)
    lr_alpha_oc: float = 1.0
    noc_grad: Literal["reference", "isolated"] = "reference"
    noc_norm_affine: Literal["frozen", "trainable"] = "frozen"


@STRATEGIES.register("pnoc")
class PNOC(POC):
    """P-OC generator ``model`` and adversarial classifier ``noc``, two optimiser phases."""

    Args = PNOCArgs

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        a = self.args
        if a.k_noc < 1:
            raise ConfigError(f"train.strategy_args.k_noc must be at least 1, got {a.k_noc}")
        if not 0 < a.delta_noc < 1:
            raise ConfigError(f"train.strategy_args.delta_noc must be in (0, 1), got {a.delta_noc}")
        if a.lr_alpha_oc <= 0:
            raise ConfigError(
                f"train.strategy_args.lr_alpha_oc must be positive, got {a.lr_alpha_oc}"
            )
        check_ramp(a.lambda_noc, "lambda_noc")
        for name, value, choices in (
            ("noc_schedule", a.noc_schedule, ("paper", "code")),
            ("hard_mask_order", a.hard_mask_order, ("upsample_first", "normalize_first")),
            ("noc_norm_affine", a.noc_norm_affine, ("frozen", "trainable")),
        ):
            if value not in choices:
                raise ConfigError(
                    f"train.strategy_args.{name} must be one of {', '.join(choices)}, got {value!r}"
                )
        self._erasing: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_critic(self) -> None:
        """The NOC: the OC checkpoint's classifier, trainable except its norm layers' γ/β."""
        self.noc = load_ordinary_classifier(self.args.oc, self.classes, "pnoc")
        if self.args.noc_norm_affine == "frozen":
            for module in self.noc.modules():
                if isinstance(module, NORM_LAYERS):
                    module.requires_grad_(False)

    def freeze_critic(self) -> None:
        """Keep the NOC's BatchNorm layers on their running statistics."""
        for module in self.noc.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def critic(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The NOC as the generator's erasing loss sees it (see ``noc_grad``)."""
        if self.args.noc_grad == "reference":
            return lambda x: self.noc(x).logits
        detached = {name: p.detach() for name, p in self.noc.named_parameters()}
        return lambda x: functional_call(self.noc, detached, (x,)).logits

    def phases(self) -> list[Phase]:
        """``generator`` trains ``model``; ``noc`` trains ``noc`` every ``k_noc`` steps."""
        return [
            Phase("generator", "model"),
            Phase(
                "noc",
                "noc",
                lr_scale=self.args.lr_alpha_oc,
                every=self.args.k_noc,
                offset=1 if self.args.noc_schedule == "code" else 0,
            ),
        ]

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """The generator's P-OC loss, or the NOC's loss on the hard-erased images."""
        if phase == "generator":
            out, maps, classes = self.generator_loss(batch, ctx)
            self._erasing = (maps, classes)
            return out
        if self._erasing is None:
            raise RuntimeError("the noc phase needs the generator phase of the same micro-batch")
        maps, classes = self._erasing
        self._erasing = None
        size = tuple(batch.images.shape[-2:])
        keep = hard_erase_keep(maps, classes, size, self.args.delta_noc, self.args.hard_mask_order)
        logits = self.net("noc")(batch.images * keep).logits
        noc = self.classification_loss(logits, batch.labels)
        lambda_noc = ctx.ramp(*self.args.lambda_noc)
        logs = {"noc": noc.detach(), "lambda_noc": lambda_noc, "erased": 1 - keep.mean()}
        return LossOutput(lambda_noc * noc, logs)
