"""SwAV and multi-crop: the loss against a float64 transcription of the official code, Sinkhorn's
properties, the prototypes' rules and queue, the small crops from loader to loss (SwAV's and a
pair loss's), and resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support.crash import TINY_RESUMABLE_RUN, final_method_state, straight_and_resumed

from ssl_bench.data.augment import LocalCropAugmentation, LocalCrops, ViewPairAugmentation, view_pair_configs
from ssl_bench.data.images import TensorImages
from ssl_bench.data.loaders import TrainLoader
from ssl_bench.errors import UsageError
from ssl_bench.methods import swav as swav_module
from ssl_bench.methods.swav import sinkhorn_codes, swav_loss
from ssl_bench.methods.vicreg import vicreg_loss
from ssl_bench.recipes import resolve_config
from ssl_bench.run.describe import describe_run
from ssl_bench.run.record import Run
from ssl_bench.train.assemble import build_method
from ssl_bench.train.trainer import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def official_swav(
    scores: list[torch.Tensor],
    global_crops: int,
    temperature: float,
    epsilon: float,
    iters: int,
    queue_scores: list[torch.Tensor] | None = None,
):
    """main_swav.py ``train`` and ``distributed_sinkhorn`` (one process), written out with loops;
    ``queue_scores``: each global crop's queue times the prototypes, put before its batch and
    cut off the codes again (``torch.cat((torch.mm(queue[i], ...), out))``, ``[-bs:]``)."""
    bs = scores[0].shape[0]
    output = torch.cat(scores)
    loss = 0.0
    for crop_id in range(global_crops):
        out = output[bs * crop_id : bs * (crop_id + 1)].detach()
        if queue_scores is not None:
            out = torch.cat((queue_scores[crop_id], out))
        q_mat = torch.exp(out / epsilon).t()
        b, k = q_mat.shape[1], q_mat.shape[0]
        q_mat = q_mat / q_mat.sum()
        for _ in range(iters):
            q_mat = q_mat / q_mat.sum(dim=1, keepdim=True) / k
            q_mat = q_mat / q_mat.sum(dim=0, keepdim=True) / b
        q = (q_mat * b).t()[-bs:]
        subloss = 0.0
        for v in range(len(scores)):
            if v == crop_id:
                continue
            x = output[bs * v : bs * (v + 1)] / temperature
            subloss = subloss - torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss = loss + subloss / (len(scores) - 1)
    return loss / global_crops


def _scores(crops: int, b: int = 6, k: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = [F.normalize(torch.randn(b, 4, generator=g, dtype=torch.float64), dim=1) for _ in range(crops)]
    prototypes = F.normalize(torch.randn(k, 4, generator=g, dtype=torch.float64), dim=1)
    return [x @ prototypes.T for x in z]


@pytest.mark.parametrize("local", [0, 3])
@pytest.mark.parametrize("temperature, epsilon, iters", [(0.1, 0.05, 3), (0.5, 0.3, 1)])
def test_matches_the_official_loss_and_its_gradient(local, temperature, epsilon, iters):
    scores = [s.requires_grad_() for s in _scores(2 + local)]
    ours = swav_loss(scores[:2], scores[2:], temperature, epsilon, iters)
    reference = official_swav(scores, 2, temperature, epsilon, iters)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    for got, want in zip(torch.autograd.grad(ours, scores), torch.autograd.grad(reference, scores), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def test_a_queue_joins_the_sinkhorn_batch_as_in_the_official_code():
    scores = [s.requires_grad_() for s in _scores(3)]
    queue = [s.detach() for s in _scores(2, b=9, seed=5)]
    ours = swav_loss(scores[:2], scores[2:], 0.1, 0.05, 3, queue_scores=queue)
    reference = official_swav(scores, 2, 0.1, 0.05, 3, queue_scores=queue)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    for got, want in zip(torch.autograd.grad(ours, scores), torch.autograd.grad(reference, scores), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    assert not torch.isclose(ours, swav_loss(scores[:2], scores[2:], 0.1, 0.05, 3))  # the queue changes the codes


def test_the_queue_fills_from_the_first_step_and_joins_the_codes_from_its_epoch():
    queue_settings = ["method_params.queue_size=10", "method_params.epoch_queue_starts=1"]
    config = resolve_config("swav", "fashion-mnist", settings=[*SMALL_SWAV, *queue_settings])
    torch.manual_seed(0)
    method = build_method(config).double()
    weight = method.prototypes.weight
    g = torch.Generator().manual_seed(2)
    earlier = torch.zeros(2, 10, 8, dtype=torch.float64)  # solo-learn's: zeros, newest rows first
    steps_per_epoch = 2  # the queue joins at step 2
    for step in range(4):
        z = [torch.randn(4, 8, generator=g, dtype=torch.float64) for _ in range(2)]
        loss, _ = method.loss(*z)
        scores = [F.normalize(x, dim=1) @ weight.T for x in z]
        queue = [earlier[i] @ weight.T for i in range(2)] if step >= 2 else None
        torch.testing.assert_close(loss, official_swav(scores, 2, 0.1, 0.05, 3, queue), rtol=1e-12, atol=0)
        method.before_optimizer_step(step, steps_per_epoch)
        earlier = torch.cat([torch.stack([F.normalize(x, dim=1) for x in z]), earlier], dim=1)[:, :10]
        torch.testing.assert_close(method.queue, earlier, rtol=0, atol=0)
    method.eval()  # evaluation never enqueues
    method.loss(*z)
    torch.testing.assert_close(method.queue, earlier, rtol=0, atol=0)


def test_each_rank_must_keep_an_equal_share_of_the_queue(monkeypatch):
    monkeypatch.setattr(swav_module, "world_size", lambda: 3)
    with pytest.raises(UsageError, match="multiple of the 3 ranks"):
        build_method(resolve_config("swav", "fashion-mnist", settings=[*SMALL_SWAV, "method_params.queue_size=10"]))


def test_codes_are_assignments_that_share_the_prototypes_out():
    (scores,) = _scores(1, b=40, k=4, seed=3)
    codes = sinkhorn_codes(scores, epsilon=0.05, iterations=50)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(40, dtype=torch.float64))  # each sample's code
    # Each prototype's share approaches B / K as the iterations go on.
    share = torch.full((4,), 10.0, dtype=torch.float64)
    error = (codes.sum(dim=0) - share).abs().max()
    assert error < 0.02 * 10 and error < (sinkhorn_codes(scores, 0.05, 1).sum(dim=0) - share).abs().max() / 10
    # A lower epsilon makes the codes harder (closer to one prototype per sample).
    soft = sinkhorn_codes(scores, epsilon=1.0, iterations=50)
    assert codes.max(dim=1).values.mean() > soft.max(dim=1).values.mean()


def test_codes_carry_no_gradient_and_the_gradient_is_softmax_minus_codes():
    scores = [s.requires_grad_() for s in _scores(3)]
    loss = swav_loss(scores[:1], scores[1:], temperature=0.2, epsilon=0.05, iterations=3)
    # The only crop with codes predicts nothing, and its codes are constants: no gradient reaches it.
    grads = torch.autograd.grad(loss, scores, allow_unused=True)
    assert grads[0] is None
    codes = sinkhorn_codes(scores[0], 0.05, 3)
    for scores_v, grad in zip(scores[1:], grads[1:]):
        expected = (F.softmax(scores_v.detach() / 0.2, dim=1) - codes) / 0.2 / 6 / 2
        torch.testing.assert_close(grad, expected)


def test_gradcheck_through_the_predicting_crops():
    # The codes are constants by design (stop-gradient), so finite differences through the global
    # crops would see a dependence the gradient rightly ignores: check the crops that only predict.
    scores = _scores(4, b=3, k=4)
    local = [s.requires_grad_() for s in scores[2:]]
    assert torch.autograd.gradcheck(lambda *s: swav_loss(scores[:2], s, 0.3, 0.2, 2), local)


SMALL_SWAV = ["projector=16,8", "method_params.prototypes=6", "image_size=16"]


def _method(**settings: str):
    config = resolve_config("swav", "fashion-mnist", settings=SMALL_SWAV)
    for key, value in settings.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return build_method(config)


def test_prototypes_stay_unit_vectors_and_are_frozen_for_their_epochs():
    method = _method()
    norms = method.prototypes.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    x = torch.rand(4, 3, 16, 16)
    method(x, x.flip(-1)).loss.backward()
    assert method.prototypes.weight.grad is not None
    steps_per_epoch = 10  # the demo row freezes the prototypes for 2 epochs: steps 0..19
    method.before_optimizer_step(19, steps_per_epoch)
    assert method.prototypes.weight.grad is None
    method(x, x.flip(-1)).loss.backward()
    method.before_optimizer_step(20, steps_per_epoch)
    assert method.prototypes.weight.grad is not None
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.after_optimizer_step(20, 100)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), norms)


def test_the_methods_loss_takes_codes_from_the_global_crops_only():
    method = _method()
    g = torch.Generator().manual_seed(1)
    z = [torch.randn(5, 8, generator=g, dtype=torch.float64) for _ in range(4)]
    loss, _ = method.loss(z[0], z[1], z_local=z[2:])
    scores = [F.normalize(x, dim=1) @ method.prototypes.weight.double().T for x in z]
    torch.testing.assert_close(loss, official_swav(scores, 2, 0.1, 0.05, 3), rtol=1e-12, atol=0)


def test_all_crops_share_the_heads_batch_statistics():
    """One projector pass over every crop (the official forward): the small crops change the
    global crops' embeddings through BatchNorm, and a two-view method's forward ignores nothing."""
    method = _method().train()
    x_a, x_b = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    local = (torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))
    alone = method(x_a, x_b).embedding
    with_local = method(x_a, x_b, local).embedding
    assert not torch.allclose(alone, with_local)
    byol = build_method(resolve_config("byol", "fashion-mnist", settings=["projector=16,8", "predictor=16,8"]))
    with pytest.raises(ValueError, match="local crops"):
        byol(x_a, x_b, local)


def test_local_crops_are_drawn_after_the_two_views_and_leave_them_unchanged():
    images = torch.randint(0, 256, (24, 1, 20, 20), dtype=torch.uint8)
    data = TensorImages(images, torch.arange(24), [str(i) for i in range(24)])
    pair = ViewPairAugmentation(view_pair_configs("symmetric", True), 16, (0.5,) * 3, (0.25,) * 3)
    local = LocalCropAugmentation(
        LocalCrops(3, 8, dataclasses.replace(pair.configs[0], crop_scale=(0.05, 0.3))), (0.5,) * 3, (0.25,) * 3
    )
    plain = list(TrainLoader(data, pair, 8, seed=4, device=CPU).epoch(1))
    multi = list(TrainLoader(data, pair, 8, seed=4, device=CPU, local_crops=local).epoch(1))
    again = list(TrainLoader(data, pair, 8, seed=4, device=CPU, local_crops=local).epoch(1, start_batch=1))
    for one, other in zip(plain, multi, strict=True):
        assert torch.equal(one.view_a, other.view_a) and torch.equal(one.view_b, other.view_b)
        assert one.local_views == () and len(other.local_views) == 3
        assert all(v.shape == (8, 3, 8, 8) for v in other.local_views)
        assert not torch.equal(other.local_views[0], other.local_views[1])
    for resumed, original in zip(again, multi[1:], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(resumed.local_views, original.local_views, strict=True))


def test_multi_crop_is_a_recipe_field_checked_at_config_time(tmp_path):
    imagenet = resolve_config("swav", "imagenet", {"data_root": str(tmp_path)}, ["local_crops.count=4"])
    assert imagenet.local_crops["count"] == 4 and imagenet.local_crops["size"] == 96
    with pytest.raises(UsageError, match="positive whole number"):
        resolve_config("swav", "imagenet", {"data_root": str(tmp_path)}, ["local_crops.count=0"])
    # A two-view method has no local crops to set.
    with pytest.raises(UsageError, match="local_crops parameter"):
        resolve_config("byol", "imagenet", {"data_root": str(tmp_path)}, ["local_crops.count=2"])
    # A pair loss's run may add them: drawn like view a, with the count and size the settings give.
    crops = ["local_crops.count=2", "local_crops.size=96", "local_crops.crop_scale=0.05,0.14"]
    vicreg = resolve_config("vicreg", "imagenet", {"data_root": str(tmp_path)}, crops)
    assert vicreg.local_crops == {**vicreg.view_a, "count": 2, "size": 96, "crop_scale": [0.05, 0.14]}
    assert describe_run(vicreg)["augmentation"]["local_crops"]["count"] == 2
    with pytest.raises(UsageError, match="size must be a positive whole number"):
        resolve_config("vicreg", "imagenet", {"data_root": str(tmp_path)}, crops[:1])
    # A two-view run's identity is what it was before multi-crop existed (the field is left out).
    assert "local_crops" not in resolve_config("vicreg", "fashion-mnist").to_dict()


def test_a_crashed_multi_crop_run_resumes_to_the_same_weights(fashion_root: Path, tmp_path: Path, monkeypatch):
    # A queue of two batches, joining from step 2: the resumed run must carry it over.
    swav = [
        "projector=16,8",
        "method_params.prototypes=6",
        "method_params.freeze_prototypes_epochs=0.5",
        "method_params.queue_size=32",
        "method_params.epoch_queue_starts=0.5",
    ]
    settings = [*TINY_RESUMABLE_RUN, *swav]
    config = resolve_config("swav", "fashion-mnist", {"epochs": 2, "data_root": str(fashion_root)}, settings)
    config.local_crops = {**config.view_a, "count": 2, "size": 8, "crop_scale": [0.1, 0.4]}
    straight, resumed = straight_and_resumed(config, tmp_path, monkeypatch, crash_step=7)
    assert resumed.resumed_from_step == 6 and resumed.final_loss == straight.final_loss
    reference, state = final_method_state(straight), final_method_state(resumed)
    for name in reference:
        assert torch.equal(state[name], reference[name]), name
    # The small crops reach the loss: the same run without them ends elsewhere.
    config.local_crops = {}
    two_views = pretrain(Run.of(tmp_path / "two", config), progress=False, log=lambda _: None)
    assert two_views.final_loss != straight.final_loss


def test_a_pair_loss_with_local_crops_is_averaged_over_each_global_crops_pairs():
    config = resolve_config("vicreg", "fashion-mnist", settings=["projector=16,8", "image_size=16"])
    torch.manual_seed(0)
    method = build_method(config)
    g = torch.Generator().manual_seed(3)
    z = [torch.randn(6, 8, generator=g, dtype=torch.float64) for _ in range(4)]  # 2 global, 2 local
    loss, terms = method.crop_pairs_loss(z)
    p = config.loss
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]  # the local crops are not paired with each other
    expected = [vicreg_loss(z[i], z[j], p["sim_coeff"], p["std_coeff"], p["cov_coeff"], p["eps"]) for i, j in pairs]
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-12, atol=0)
    invariance = [F.mse_loss(z[i], z[j]) for i, j in pairs]
    torch.testing.assert_close(terms["invariance"], torch.stack(invariance).mean(), rtol=1e-12, atol=0)
    # Two crops alone: the two-view loss.
    torch.testing.assert_close(method.crop_pairs_loss(z[:2])[0], expected[0], rtol=0, atol=0)
    # The forward takes the small crops through the same network into the pairs.
    x_a, x_b, local = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16), (torch.rand(4, 3, 8, 8),)
    assert method(x_a, x_b, local).loss != method(x_a, x_b).loss


def test_a_crashed_multi_crop_vicreg_run_resumes_to_the_same_weights(fashion_root: Path, tmp_path: Path, monkeypatch):
    crops = ["local_crops.count=2", "local_crops.size=8", "local_crops.crop_scale=0.1,0.4"]
    settings = [*TINY_RESUMABLE_RUN, "projector=16,8", *crops]
    config = resolve_config("vicreg", "fashion-mnist", {"epochs": 2, "data_root": str(fashion_root)}, settings)
    straight, resumed = straight_and_resumed(config, tmp_path, monkeypatch, crash_step=7)
    assert resumed.resumed_from_step == 6 and resumed.final_loss == straight.final_loss
    reference, state = final_method_state(straight), final_method_state(resumed)
    for name in reference:
        assert torch.equal(state[name], reference[name]), name


@pytest.mark.parametrize(
    "setting, match",
    [
        ("loss.sinkhorn_iterations=1.5", "sinkhorn_iterations"),
        ("loss.epsilon=0", "epsilon"),
        ("method_params.prototypes=0", "prototypes"),
        ("method_params.freeze_prototypes_epochs=-1", "freeze_prototypes_epochs"),
        ("method_params.queue_size=1.5", "queue_size"),
        ("method_params.queue_size=-2", "queue_size"),
        ("method_params.epoch_queue_starts=-1", "epoch_queue_starts"),
    ],
)
def test_bad_parameters_are_usage_errors(setting, match):
    with pytest.raises(UsageError, match=match):
        resolve_config("swav", "fashion-mnist", settings=[setting])
