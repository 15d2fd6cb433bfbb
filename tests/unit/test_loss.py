"""The SCL term against a float64 brute-force double loop of the paper's formula, plus invariances,
edge cases and gradcheck (that its gradient reaches a real encoder: tests/e2e/test_loss_encoder.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from harness.training.loss import supervised_contrastive_loss


def brute_force_scl(z: torch.Tensor, labels: torch.Tensor, tau: float, reduction: str) -> float:
    """The paper's formula, literally, in float64; anchors without a positive are dropped."""
    z = z.double()
    b = z.shape[0]
    per_anchor = []
    for i in range(b):
        positives = [j for j in range(b) if j != i and labels[j] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(b) if k != i)
        total = sum(math.log(math.exp(float(z[i] @ z[j]) / tau) / denom) for j in positives)
        per_anchor.append(-total / len(positives))
    if not per_anchor:
        return 0.0
    return sum(per_anchor) if reduction == "sum" else sum(per_anchor) / len(per_anchor)


def random_batch(b, d, classes, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    labels = torch.randint(0, classes, (b,), generator=g)
    return z, labels


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("b,classes,tau,seed", [(16, 2, 0.3, 0), (16, 3, 0.1, 1), (7, 3, 0.5, 2),
                                                (32, 6, 0.05, 3), (2, 2, 0.3, 4)])
def test_matches_brute_force(reduction, b, classes, tau, seed):
    z, labels = random_batch(b, 8, classes, seed)
    got = supervised_contrastive_loss(z, labels, tau, reduction).item()
    assert abs(got - brute_force_scl(z, labels, tau, reduction)) <= 1e-6


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_single_member_classes_are_dropped(reduction):
    z, _ = random_batch(6, 5, 2, 7)
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # class 1 occurs once: that anchor has no positive
    got = supervised_contrastive_loss(z, labels, 0.3, reduction).item()
    assert abs(got - brute_force_scl(z, labels, 0.3, reduction)) <= 1e-6
    # float32 input agrees too
    got32 = supervised_contrastive_loss(z.float(), labels, 0.3, reduction).item()
    assert abs(got32 - brute_force_scl(z, labels, 0.3, reduction)) <= 1e-4


def test_permutation_invariance():
    z, labels = random_batch(12, 6, 3, 11)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    a = supervised_contrastive_loss(z, labels, 0.3)
    b = supervised_contrastive_loss(z[perm], labels[perm], 0.3)
    assert torch.allclose(a, b, atol=1e-12)


def test_gradcheck_float64():
    z, labels = random_batch(6, 4, 2, 5)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: supervised_contrastive_loss(F.normalize(t, dim=1), labels, 0.3), (x,))
    assert torch.autograd.gradcheck(
        lambda t: supervised_contrastive_loss(F.normalize(t, dim=1), labels, 0.3, "sum"), (x,))


@pytest.mark.parametrize("b", [1, 3, 8])
def test_every_anchor_alone_is_zero_not_nan(b):
    x = torch.randn(b, 4, requires_grad=True)
    loss = supervised_contrastive_loss(F.normalize(x, dim=1), torch.arange(b), 0.3)
    assert loss.item() == 0.0
    loss.backward()  # still attached to the graph
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_small_tau_stays_finite():
    z, labels = random_batch(16, 8, 2, 3, torch.float32)
    loss = supervised_contrastive_loss(z, labels, 1e-3)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bf16_autocast_computes_in_float32(reduction):
    """Inside autocast `z @ z.T` would run in bfloat16 (loss 2.781250 against 2.784198 at τ = 0.1):
    loss and gradient under CPU bf16 autocast equal the float32 ones."""
    from harness.training.loss import normalize

    g = torch.Generator().manual_seed(7)
    features = torch.randn(16, 64, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (16,), generator=g)

    def loss():
        return supervised_contrastive_loss(normalize(features), labels, 0.1, reduction)

    reference = loss()
    (reference_grad,) = torch.autograd.grad(reference, features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (features @ features.T).dtype == torch.bfloat16  # the autocast region is real
        loss = loss()
    (grad,) = torch.autograd.grad(loss, features)  # backward outside autocast, as in train_step
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference.item()) <= 1e-6 * abs(reference.item())
    assert (grad - reference_grad).norm() <= 1e-6 * reference_grad.norm()
    # bfloat16 input (an encoder output under autocast) is upcast, then computed in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = supervised_contrastive_loss(normalize(features.detach().bfloat16()), labels, 0.1, reduction)
    exact = supervised_contrastive_loss(normalize(features.detach().bfloat16().float()), labels, 0.1, reduction)
    assert half.dtype == torch.float32 and half.item() == exact.item()


def test_an_unknown_reduction_is_refused_by_name():
    z, labels = random_batch(4, 3, 2, 0)
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum'\), got 'median'"):
        supervised_contrastive_loss(z, labels, 0.3, "median")


def test_the_masks_live_on_the_embeddings_device():
    """On a GPU a mask built on the CPU fails the step; the meta device (shapes, no data) shows the
    same on a CPU machine. _scl directly: autocast, which the public function enters, has no meta."""
    from harness.training.loss import _scl

    z = torch.empty(6, 4, device="meta")
    out = _scl(z, torch.tensor([0, 0, 1, 1, 2, 2], device="meta"), 0.3, "mean")
    assert out.device.type == "meta" and out.shape == ()


def test_normalize_gives_each_row_unit_length_in_its_direction():
    from harness.training.loss import normalize

    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0], [-6.0, 8.0, 0.0]])
    z = normalize(x)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(z[0], torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(z * x.norm(dim=1, keepdim=True), x)
    half = normalize(x.bfloat16())
    assert half.dtype == torch.float32 and torch.allclose(half, z, atol=1e-2)
