"""The fine-tuning objective of harness.training.finetune, `(1 − λ)·CE + λ·SCL`, on a one-layer BERT
built in memory: its value, both of its gradients (through the head and through Φ(x)), what a CE
job logs, and one optimisation step. The SCL term itself is tests/unit/test_loss.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from harness.errors import PermanentJobError
from harness.protocol.paper import PAPER_TAU
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import get_task
from harness.training.finetune import compute_loss, train_step
from harness.training.loss import supervised_contrastive_loss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])  # every class twice or more: every anchor has a positive


def tiny_model(num_labels: int = 3, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).eval()  # no dropout: one function of the weights


def tiny_batch(rows: int = 8, width: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[::3, -2:] = 0  # some padding, as dynamic padding leaves it
    return {"input_ids": torch.randint(1, 40, (rows, width), generator=g), "attention_mask": mask}


def spec(loss: str, **kw) -> JobSpec:
    return JobSpec.make(task=kw.pop("task", "trec"), seed=0, loss=loss, model="m", **kw)


def reference(model, batch, labels, tau: float, reduction: str = "mean"):
    """CE and SCL of the batch written out from the model's own outputs: logits and the final
    layer's first-token vector, normalised."""
    out = model(**batch, output_hidden_states=True)
    ce = F.cross_entropy(out.logits, labels)
    scl = supervised_contrastive_loss(F.normalize(out.hidden_states[-1][:, 0], dim=-1), labels, tau, reduction)
    return ce, scl


def gradient(model, scalar: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(scalar, params, allow_unused=True, retain_graph=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def head_and_encoder(model, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat parameter gradient split into the classification head's part and the encoder's."""
    parts, head, encoder, at = dict(model.named_parameters()), [], [], 0
    for name, p in parts.items():
        piece = flat[at:at + p.numel()]
        (head if name.startswith("classifier") else encoder).append(piece)
        at += p.numel()
    return torch.cat(head), torch.cat(encoder)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9])
def test_the_objective_mixes_ce_and_scl_as_the_paper_writes_it(lam):
    """loss = (1 − λ)·CE + λ·SCL in value and in gradient (a swapped mix, λ·CE + (1 − λ)·SCL,
    differs in both at every λ but ½)."""
    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    s = spec("ce+scl", lam=lam, tau=0.3)
    loss, ce, scl = compute_loss(model, batch, LABELS, s, task)
    ref_ce, ref_scl = reference(model, batch, LABELS, 0.3)
    assert ce.item() == pytest.approx(ref_ce.item(), rel=1e-5)
    assert scl.item() == pytest.approx(ref_scl.item(), rel=1e-5)
    assert loss.item() == pytest.approx((1 - lam) * ref_ce.item() + lam * ref_scl.item(), rel=1e-5)

    g_ce, g_scl = gradient(model, ref_ce), gradient(model, ref_scl)
    got = gradient(model, loss)
    torch.testing.assert_close(got, (1 - lam) * g_ce + lam * g_scl, rtol=1e-4, atol=1e-7)
    # SCL reads Φ(x), not the logits: the head's gradient is CE's alone, the encoder's both
    head_scl, encoder_scl = head_and_encoder(model, g_scl)
    assert head_scl.abs().max() == 0 and encoder_scl.abs().max() > 0
    head, encoder = head_and_encoder(model, got)
    torch.testing.assert_close(head, (1 - lam) * head_and_encoder(model, g_ce)[0], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scl_takes_the_jobs_tau_and_reduction(reduction):
    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    _, _, scl = compute_loss(model, batch, LABELS, spec("ce+scl", lam=0.5, tau=0.1, scl_reduction=reduction), task)
    assert scl.item() == pytest.approx(reference(model, batch, LABELS, 0.1, reduction)[1].item(), rel=1e-5)
    assert scl.item() != pytest.approx(reference(model, batch, LABELS, PAPER_TAU, reduction)[1].item(), rel=1e-3)


def test_a_ce_job_trains_on_ce_alone_and_logs_scl_at_the_monitor_tau():
    """λ = 0: the loss is CE and so is its whole gradient (a swapped mix would leave the detached
    SCL monitor: zero gradient, a baseline that never trains). The logged SCL is the batch's SCL
    at τ = PAPER_TAU, mean over anchors, carrying no graph."""
    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    s = spec("ce")
    assert s.lam == 0.0
    loss, ce, scl = compute_loss(model, batch, LABELS, s, task)
    ref_ce, ref_scl = reference(model, batch, LABELS, PAPER_TAU)
    assert loss.item() == pytest.approx(ref_ce.item(), rel=1e-6) and ce.item() == loss.item()
    assert scl.item() == pytest.approx(ref_scl.item(), rel=1e-5) and scl.item() != pytest.approx(loss.item())
    assert not scl.requires_grad  # the monitor never enters the graph
    g = gradient(model, loss)
    torch.testing.assert_close(g, gradient(model, ref_ce), rtol=1e-5, atol=1e-8)
    assert g.abs().max() > 0


def test_a_regression_job_trains_on_mse():
    model, batch, task = tiny_model(num_labels=1), tiny_batch(), get_task("stsb")
    targets = torch.linspace(0.0, 5.0, 8)
    loss, ce, scl = compute_loss(model, batch, targets, spec("ce", task="stsb"), task)
    expected = F.mse_loss(model(**batch).logits.squeeze(-1), targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and ce.item() == loss.item()
    assert scl.item() == 0.0


class SGDPlan:
    """A plain SGD step and a schedule that halves the learning rate at each step: what one
    train_step must do is then computable by hand."""

    def __init__(self, model, lr: float = 0.5):
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 0.5 ** step)


def test_one_training_step_descends_the_objective_once():
    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    s = spec("ce+scl", lam=0.9, tau=0.3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref_ce, ref_scl = reference(model, batch, LABELS, 0.3)
    expected_loss = 0.1 * ref_ce + 0.9 * ref_scl
    grads = dict(zip([n for n, _ in model.named_parameters()],
                     torch.autograd.grad(expected_loss, list(model.parameters()), allow_unused=True)))
    plan = SGDPlan(model)
    parts = train_step(model, plan.optimizer, plan.scheduler, batch, LABELS, s, task)
    assert parts.dtype == torch.float64 and parts.device.type == "cpu" and parts.shape == (3,)
    torch.testing.assert_close(parts, torch.tensor([expected_loss.item(), ref_ce.item(), ref_scl.item()],
                                                   dtype=torch.float64), rtol=1e-5, atol=1e-8)
    for n, p in model.named_parameters():
        step = 0 if grads[n] is None else 0.5 * grads[n]
        torch.testing.assert_close(p.detach(), before[n] - step, rtol=1e-4, atol=1e-6)
        assert p.grad is None  # cleared for the next batch
    assert plan.optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # the schedule moved on

    # a second step uses this batch's gradient only, at the next learning rate
    after_one = {n: p.detach().clone() for n, p in model.named_parameters()}
    ce2, scl2 = reference(model, batch, LABELS, 0.3)
    g2 = dict(zip([n for n, _ in model.named_parameters()],
                  torch.autograd.grad(0.1 * ce2 + 0.9 * scl2, list(model.parameters()), allow_unused=True)))
    train_step(model, plan.optimizer, plan.scheduler, batch, LABELS, s, task)
    for n, p in model.named_parameters():
        step = 0 if g2[n] is None else 0.25 * g2[n]
        torch.testing.assert_close(p.detach(), after_one[n] - step, rtol=1e-4, atol=1e-6)


def test_a_non_finite_loss_fails_before_the_weights_move():
    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan = SGDPlan(model)
    with pytest.raises(PermanentJobError, match="non-finite loss at epoch 2 step 7"):
        train_step(model, plan.optimizer, plan.scheduler, batch, LABELS, spec("ce"), task, where="epoch 2 step 7")
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], equal_nan=True)
    assert plan.optimizer.param_groups[0]["lr"] == 0.5


def test_a_non_finite_scl_term_fails_the_step_too(monkeypatch):
    """CE finite, SCL not: the mixed loss is what is checked, not CE alone."""
    import harness.training.finetune as ft

    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    monkeypatch.setattr(ft, "supervised_contrastive_loss", lambda z, labels, tau, reduction: z.sum() * float("inf"))
    plan = SGDPlan(model)
    with pytest.raises(PermanentJobError, match="^non-finite loss at a training step$"):
        train_step(model, plan.optimizer, plan.scheduler, batch, LABELS, spec("ce+scl", lam=0.5, tau=0.3), task)


@pytest.mark.parametrize("packed", [False, True, None])  # None: not asked, the full pass
def test_the_packed_forward_pass_is_the_callers_choice(packed, monkeypatch):
    """train_step and compute_loss run harness.training.packed only when asked (fine_tune asks
    where the model allows it), and both passes give the same objective."""
    import harness.training.finetune as ft

    entered = []

    def spy(model, mask):
        entered.append(tuple(mask.shape))
        return real(model, mask)

    real = ft.packed_encoder
    monkeypatch.setattr(ft, "packed_encoder", spy)
    model, batch, task = tiny_model(), tiny_batch(), get_task("trec")
    s = spec("ce+scl", lam=0.5, tau=0.3)
    expected = compute_loss(model, batch, LABELS, s, task)[0].item()
    assert entered == []  # not asked: the full pass
    plan = SGDPlan(model)
    asked = {} if packed is None else dict(packed=packed)
    parts = train_step(model, plan.optimizer, plan.scheduler, batch, LABELS, s, task, **asked)
    assert entered == ([(8, 6)] if packed else [])
    assert parts[0].item() == pytest.approx(expected, rel=1e-5)


def test_the_step_plan_counts_batches_and_warm_up():
    from harness.training.finetune import StepPlan

    plan = StepPlan.of(spec("ce", batch_size=8, epochs=10, warmup_ratio=0.1), n_train=20)
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (3, 30, 3)  # 8 + 8 + 4 a epoch
    assert StepPlan.of(spec("ce", batch_size=8, epochs=3, warmup_ratio=0.25), n_train=16).warmup_steps == 1
