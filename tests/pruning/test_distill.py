"""The fine-tune stage's distillation loss against hand-computed values."""

import math

import pytest
import torch

from gohsp_lightning.pruning.distill import distillation_loss


def test_soft_distillation_is_the_tempered_kl_scaled_by_t_squared():
    student = torch.tensor([[2.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0]])
    t = 2.0
    p = torch.softmax(teacher / t, dim=-1)[0]
    q = torch.softmax(student / t, dim=-1)[0]
    kl = sum(float(pi) * math.log(float(pi) / float(qi)) for pi, qi in zip(p, q, strict=True))
    assert float(distillation_loss(student, teacher, "soft", t)) == pytest.approx(kl * t * t)
    assert float(distillation_loss(teacher, teacher, "soft", t)) == pytest.approx(0.0, abs=1e-7)


def test_hard_distillation_is_cross_entropy_to_the_teachers_top_class():
    student = torch.tensor([[1.0, 3.0, 0.0], [0.5, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, 9.0], [5.0, 1.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(student, torch.tensor([2, 0]))
    assert torch.equal(distillation_loss(student, teacher, "hard"), expected)
