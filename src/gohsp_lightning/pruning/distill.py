"""The fine-tune stage's knowledge-distillation loss: the hard-pruned student learns the dense teacher's outputs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DistillKind = Literal["soft", "hard"]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: DistillKind = "soft", temperature: float = 4.0
) -> torch.Tensor:
    """``soft``: KL(teacher || student) of the softened distributions, times ``T^2`` so that its gradients keep
    their size whatever the temperature (Hinton et al.); ``hard``: cross-entropy to the teacher's top class
    (DeiT's hard distillation)."""
    if kind == "hard":
        return F.cross_entropy(student_logits, teacher_logits.argmax(dim=-1))
    student = F.log_softmax(student_logits / temperature, dim=-1)
    target = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(student, target, reduction="batchmean", log_target=True) * temperature * temperature
