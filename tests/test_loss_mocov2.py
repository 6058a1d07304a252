"""MoCo v2's loss against an independent per-query reference, the queue of negatives it carries
from step to step (first in, first out, only in training), the direction option, the momentum
schedules of its rows, and a resume that ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from support.crash import TINY_RESUMABLE_RUN, final_method_state, straight_and_resumed

from ssl_bench.errors import UsageError
from ssl_bench.methods.mocov2 import MoCoV2, enqueue, mocov2_loss
from ssl_bench.models.backbones import TinyConvNet
from ssl_bench.recipes import resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")

# (N, D, K): queue longer and shorter than the batch, one negative, wide embeddings.
SHAPES = [(8, 4, 16), (5, 16, 3), (6, 3, 1), (2, 32, 40)]


def _inputs(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys near them (not normalised), and a queue of unit rows (K, D)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    key = 2.0 * q + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    queue = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return q.requires_grad_(), key.requires_grad_(), queue


def reference(q: torch.Tensor, k: torch.Tensor, queue_dk: torch.Tensor, t: float) -> torch.Tensor:
    """moco/builder.py forward (commit 7397dfe1, lines 138-168) and the criterion of main_moco.py
    (line 418), one query at a time: q and k normalised, l_pos = q.k, l_neg = q against each column
    of the (D, K) queue, logits / T, cross-entropy with label 0, averaged over the batch."""
    k = k.detach()
    total = 0.0
    for i in range(q.shape[0]):
        q_i = q[i] / torch.sqrt((q[i] * q[i]).sum())
        k_i = k[i] / torch.sqrt((k[i] * k[i]).sum())
        logits = [torch.dot(q_i, k_i) / t] + [torch.dot(q_i, queue_dk[:, j]) / t for j in range(queue_dk.shape[1])]
        denominator = sum(torch.exp(logit) for logit in logits)
        total = total - torch.log(torch.exp(logits[0]) / denominator)
    return total / q.shape[0]


# --- the loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [0.2, 0.07, 1.0])
def test_matches_reference_value_and_gradient(shape, t):
    q, k, queue = _inputs(*shape, seed=sum(shape))
    loss = mocov2_loss(q, k, queue, temperature=t)
    expected = reference(q, k, queue.T, t)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, q)
    (grad_ref,) = torch.autograd.grad(expected, q)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_keys_and_queue_carry_no_gradient():
    q, k, queue = _inputs(6, 5, 7, seed=1)
    queue.requires_grad_()
    grad_q, grad_k, grad_queue = torch.autograd.grad(mocov2_loss(q, k, queue), (q, k, queue), allow_unused=True)
    assert grad_k is None and grad_queue is None and grad_q.abs().sum() > 0


def test_hand_computed_values():
    # q = k = e_0 and a queue e_1, e_2, e_3: logits [1/T, 0, 0, 0] with the positive first, so the
    # loss is log(1 + 3 exp(-1/T)).
    e = torch.eye(4, dtype=torch.float64)
    for t in (0.2, 0.5):
        aligned = mocov2_loss(e[:1].repeat(2, 1), 3 * e[:1].repeat(2, 1), e[1:], temperature=t)
        assert aligned.item() == pytest.approx(math.log(1 + 3 * math.exp(-1 / t)), rel=1e-13)
        # The query equal to a queue entry, orthogonal to its key: logits [0, 1/T, 0, 0].
        misled = mocov2_loss(e[1:2].repeat(2, 1), e[:1].repeat(2, 1), e[1:], temperature=t)
        assert misled.item() == pytest.approx(math.log(math.exp(1 / t) + 3), rel=1e-13)
    # A queue of copies of the positive key (a collapsed encoder's): log(1 + K) whatever T.
    same = torch.ones(3, 5, dtype=torch.float64)
    assert mocov2_loss(same, same, F.normalize(torch.ones(9, 5, dtype=torch.float64), dim=1), 0.2).item() == (
        pytest.approx(math.log(10), rel=1e-13)
    )


def test_invariant_to_permuting_queries_and_keys_together_and_the_queue():
    q, k, queue = _inputs(10, 6, 12, seed=2)
    g = torch.Generator().manual_seed(0)
    perm, queue_perm = torch.randperm(10, generator=g), torch.randperm(12, generator=g)
    torch.testing.assert_close(
        mocov2_loss(q[perm], k[perm], queue[queue_perm], 0.3), mocov2_loss(q, k, queue, 0.3), rtol=1e-12, atol=1e-14
    )


def test_gradcheck():
    q, k, queue = _inputs(4, 3, 5, seed=4)
    q = q.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: mocov2_loss(x, k, queue, temperature=0.2), (q,))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"), ({"width": 4}, r"queue must be")],
)
def test_bad_arguments_are_errors(kwargs, match):
    q, k, _ = _inputs(4, 3, 5, seed=0)
    queue = F.normalize(torch.randn(5, kwargs.pop("width", 3), dtype=torch.float64), dim=1)
    with pytest.raises(ValueError, match=match):
        mocov2_loss(q, k, queue, **kwargs)


# --- the queue: first in, first out ----------------------------------------------------------


def test_enqueue_replaces_the_oldest_keys_and_the_pointer_wraps():
    queue = torch.zeros(2, 6, 1, dtype=torch.float64)
    pointer = torch.zeros((), dtype=torch.int64)
    batches = [torch.tensor([[[10.0 * s + 1], [10.0 * s + 2]], [[-10.0 * s - 1], [-10.0 * s - 2]]]) for s in range(4)]
    for step, keys in enumerate(batches[:3]):
        enqueue(queue, pointer, keys.double())
        assert int(pointer) == (2 * (step + 1)) % 6
    assert queue[0, :, 0].tolist() == [1, 2, 11, 12, 21, 22]
    assert queue[1, :, 0].tolist() == [-1, -2, -11, -12, -21, -22]
    enqueue(queue, pointer, batches[3].double())  # the queue is full: the first batch goes
    assert queue[0, :, 0].tolist() == [31, 32, 11, 12, 21, 22]
    assert queue[1, :, 0].tolist() == [-31, -32, -11, -12, -21, -22]
    assert int(pointer) == 2


@pytest.mark.parametrize("keys_shape", [(2, 4, 3), (1, 3, 3), (1, 2, 4)])
def test_keys_that_do_not_fit_the_queue_are_errors(keys_shape):
    queue, pointer = torch.zeros(1, 8, 3), torch.zeros((), dtype=torch.int64)
    with pytest.raises(ValueError, match="do not fit the queue"):
        enqueue(queue, pointer, torch.ones(keys_shape))
    assert int(pointer) == 0 and not queue.any()


# --- the method ------------------------------------------------------------------------------


def _method(symmetric: bool, queue_size: int = 12, seed: int = 0, momentum: tuple = (0.99, 0.999)) -> MoCoV2:
    torch.manual_seed(seed)
    return (
        MoCoV2(
            TinyConvNet((4, 8)),
            8,
            (16, 5),
            loss_params={"temperature": 0.2, "queue_size": queue_size, "symmetric": symmetric},
            method_params={"momentum_base": momentum[0], "momentum_final": momentum[1]},
        )
        .double()
        .train()
    )


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _keys(method: MoCoV2, x: torch.Tensor) -> torch.Tensor:
    """The momentum encoder's unit-length embeddings of ``x`` (train-mode BatchNorm: what the step sees)."""
    with torch.no_grad():
        return F.normalize(method.target_projector(method.target_backbone(x)), dim=1)


@pytest.mark.parametrize("symmetric", [False, True])
def test_the_queue_starts_as_unit_gaussian_keys_drawn_from_the_runs_seed(symmetric):
    method = _method(symmetric, queue_size=4000)
    queue = method.queue
    assert queue.shape == (2 if symmetric else 1, 4000, 5) and int(method.queue_ptr) == 0
    torch.testing.assert_close(queue.norm(dim=-1), torch.ones(queue.shape[:2], dtype=torch.float64))
    # Normalised Gaussian vectors are uniform on the sphere: coordinates with mean 0, variance 1/D.
    coordinates = queue.reshape(-1)
    assert abs(coordinates.mean().item()) < 0.01 and coordinates.var().item() == pytest.approx(1 / 5, rel=0.03)
    same, other = _method(symmetric, queue_size=4000), _method(symmetric, queue_size=4000, seed=1)
    assert torch.equal(same.queue, queue) and not torch.equal(other.queue, queue)


@pytest.mark.parametrize("symmetric", [False, True])
def test_each_training_step_enqueues_its_keys_and_evaluation_steps_do_not(symmetric):
    # Queue of 3 batches of 4: the fourth step replaces the first step's keys.
    method = _method(symmetric)
    steps = [(_images(4, 2 * s), _images(4, 2 * s + 1)) for s in range(4)]
    initial = method.queue.clone()
    expected = initial.clone()
    for s, (x_a, x_b) in enumerate(steps):
        rows = slice(4 * (s % 3), 4 * (s % 3) + 4)
        expected[0, rows] = _keys(method, x_b)  # direction 0: view b's keys, the negatives of view a's queries
        if symmetric:
            expected[1, rows] = _keys(method, x_a)
        method(x_a, x_b)
        torch.testing.assert_close(method.queue, expected, rtol=0, atol=1e-15)
        assert int(method.queue_ptr) == 4 * (s + 1) % 12
    assert not torch.equal(method.queue, initial)
    method.eval()
    before = method.queue.clone()
    method(_images(4, 20), _images(4, 21))
    assert torch.equal(method.queue, before) and int(method.queue_ptr) == 4


def test_the_official_loss_takes_view_a_queries_against_view_b_keys_and_one_queue():
    method = _method(symmetric=False)
    seen = {}
    original = method.loss

    def spy(z_a, z_b, **heads):
        seen.update(z_a=z_a, z_b=z_b, **heads)
        return original(z_a, z_b, **heads)

    method.loss = spy
    queue = method.queue[0].clone()
    x_a, x_b = _images(4, 3), _images(4, 4)
    out = method(x_a, x_b)
    assert seen["z_b"] is None and set(seen) == {"z_a", "z_b", "target_b"} and not seen["target_b"].requires_grad
    torch.testing.assert_close(seen["target_b"], method.target_projector(method.target_backbone(x_b)))
    expected = reference(seen["z_a"], seen["target_b"], queue.T, 0.2)
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)


def test_the_symmetric_loss_is_the_mean_of_both_directions_each_with_its_queue():
    method = _method(symmetric=True)
    method(_images(4, 5), _images(4, 6))  # the queues now differ from their initial draw
    queue = method.queue.clone()
    g = torch.Generator().manual_seed(7)
    z_a, z_b, t_a, t_b = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(4))
    loss, _ = method.loss(z_a, z_b, target_a=t_a, target_b=t_b)
    expected = (reference(z_a, t_b, queue[0].T, 0.2) + reference(z_b, t_a, queue[1].T, 0.2)) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    swapped = (reference(z_a, t_b, queue[1].T, 0.2) + reference(z_b, t_a, queue[0].T, 0.2)) / 2
    assert not torch.allclose(loss, swapped)


def test_a_step_contrasts_with_the_queue_the_earlier_steps_left():
    method = _method(symmetric=False)
    first, second = (_images(4, 8), _images(4, 9)), (_images(4, 10), _images(4, 11))
    method(*first)
    queue = method.queue[0].clone()
    with torch.no_grad():
        z_a = method.projector(method.backbone(second[0]))
        t_b = method.target_projector(method.target_backbone(second[1]))
    loss = method(*second).loss.detach()
    torch.testing.assert_close(loss, reference(z_a, t_b, queue.T, 0.2), rtol=1e-12, atol=1e-12)
    # The keys of this very step are not among its negatives: with them the loss is another.
    now = method.queue[0]
    assert not torch.allclose(loss, reference(z_a, t_b, now.T, 0.2))
    # The step's backward still reads the queue as its forward did, after the enqueue wrote it.
    out = method(*first)
    out.loss.backward()
    assert all(p.grad is not None for p in method.projector.parameters())


def test_the_recipes_momentum_schedules():
    # solo-learn: a cosine from 0.99 to 0.999 (mocov2plus.yaml:23-25); official: m = 0.999 throughout.
    solo = _method(True, momentum=(0.99, 0.999))
    total = 100
    for step in (0, 30, 50, 100):
        expected = 0.999 - (0.999 - 0.99) * (math.cos(math.pi * step / total) + 1) / 2
        assert solo.target_momentum(step, total) == pytest.approx(expected, rel=1e-15)
    official = _method(False, momentum=(0.999, 0.999))
    assert {official.target_momentum(step, total) for step in range(total + 1)} == {0.999}
    assert resolve_config("mocov2", "imagenet").method_params == {"momentum_base": 0.999, "momentum_final": 0.999}
    assert resolve_config("mocov2", "cifar10").method_params == {"momentum_base": 0.99, "momentum_final": 0.999}


# --- configuration -----------------------------------------------------------------------------


def test_the_rows_take_the_direction_of_their_source():
    cifar, imagenet = resolve_config("mocov2", "cifar10"), resolve_config("mocov2", "imagenet")
    assert cifar.loss == {"temperature": 0.2, "queue_size": 32768, "symmetric": True}
    assert imagenet.loss == {"temperature": 0.2, "queue_size": 65536}  # the default: the official direction


def test_a_queue_the_global_batch_does_not_divide_is_a_usage_error():
    message = r"queue_size of mocov2 \(32768\) must be a multiple of the global batch size \(384\)"
    with pytest.raises(UsageError, match=message):
        resolve_config("mocov2", "cifar10", settings=["batch_size=384"])
    with pytest.raises(UsageError, match=r"\(1000\) must be a multiple of the global batch size \(256\)"):
        resolve_config("mocov2", "cifar10", settings=["loss.queue_size=1000"])
    assert resolve_config("mocov2", "cifar10", settings=["batch_size=512"]).batch_size == 512


@pytest.mark.parametrize(
    "setting, match",
    [
        ("loss.queue_size=0", "positive integer"),
        ("loss.queue_size=256.5", "positive integer"),
        ("loss.symmetric=maybe", "true or false"),
        ("loss.temperature=0", "temperature must be positive"),
        ("method_params.momentum_final=0.98", r"momentum_final must be in \[momentum_base, 1\]"),
    ],
)
def test_bad_loss_and_method_parameters_are_usage_errors(setting, match):
    with pytest.raises(UsageError, match=match):
        resolve_config("mocov2", "cifar10", settings=[setting])


def test_a_row_whose_direction_is_not_a_bool_is_a_usage_error():
    with pytest.raises(UsageError, match=r"loss\.symmetric of mocov2 must be true or false, got 1"):
        _method(symmetric=1)  # what a TOML row with `symmetric = 1` gives


# --- resuming --------------------------------------------------------------------------------

# 8 steps of 16 in 2 epochs (TINY_RESUMABLE_RUN); a queue of 3 batches, which they wrap twice.
TINY_RUN = ["projector=16,8", "loss.queue_size=48", *TINY_RESUMABLE_RUN]


@pytest.mark.parametrize("symmetric", ["true", "false"])
def test_a_crashed_run_resumes_to_the_same_weights_and_queue(symmetric, fashion_root, tmp_path, monkeypatch):
    # The crash before step 7 leaves the mid-epoch checkpoint of step 6; steps 6 and 7 are trained
    # again after the resume and must contrast with the queue the uninterrupted run had.
    settings = [*TINY_RUN, f"loss.symmetric={symmetric}"]
    config = resolve_config("mocov2", "fashion-mnist", {"epochs": 2, "data_root": str(fashion_root)}, settings)
    straight, resumed = straight_and_resumed(config, tmp_path, monkeypatch, crash_step=7)
    assert resumed.resumed_from_step == 6
    reference_state, state = final_method_state(straight), final_method_state(resumed)
    assert state.keys() == reference_state.keys()
    for name in reference_state:
        assert torch.equal(state[name], reference_state[name]), name
    assert resumed.final_loss == straight.final_loss
    # 8 steps of 16 keys into 48 rows: the pointer wrapped twice and stands at 32.
    assert int(reference_state["queue_ptr"]) == 8 * 16 % 48
    assert reference_state["queue"].shape == (2 if symmetric == "true" else 1, 48, 8)
