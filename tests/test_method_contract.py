"""The contract every registered method meets, checked for each one automatically.

Parametrised over ``available_methods()``: the built-in methods and any method a contributor
adds (a file in methods/, or a package exposing it under the ``ssl_bench.methods`` entry-point
group) are checked without writing a test. What is asserted holds for every sound method:

- it documents itself (module and class docstrings: the paper, the equations);
- it has a complete, valid recipe for every recipe table (a row in experiments/recipes/*.toml or
  one the class carries), with the parameters its declarations ask for;
- its loss is a finite scalar whose gradients reach backbone, projector (and predictor), never
  the momentum target;
- the loss does not depend on the order of the batch (both views permuted alike);
- collapsed inputs give a finite loss and finite gradients; and where the method declares that
  its loss penalises collapse (``loss_penalises_collapse``), collapsed embeddings score worse
  than diverse ones whose views agree. Methods that avoid collapse through their architecture
  (BYOL, SimSiam: predictor and stop-gradient) score collapse as well as perfect agreement, so
  nothing more is asserted for them. A loss that is undefined on a collapsed batch at its
  recipes' settings (W-MSE's whitening without shrinkage) must say so with a non-finite value,
  which stops a run as diverged, and meets the rest with the parameters that define it there
  (``DEFINED_AT_COLLAPSE``);
- a momentum target moves by the EMA of its declared schedule; state (weights, running
  statistics, targets, loss state) survives a state_dict round trip, which is what resuming uses.

Everything runs in float64 on a tiny backbone, with a fresh copy of the method wherever its loss
keeps state (TiCo's running covariance), and with the batch-dependent settings of a loss fitted
to the tiny batch (``TINY_FIT``).
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from ssl_bench.data.augment import ViewPairAugmentation
from ssl_bench.method import Method, StepOutput, available_methods, get_method
from ssl_bench.models.backbones import TinyConvNet
from ssl_bench.recipes import RECIPE_FILES, load_recipe_table, recipe_row, resolve_config
from ssl_bench.train.optim import OPTIMIZERS, parameter_groups

METHODS = available_methods()
N, IMAGE, FEATURES = 8, 12, 8

# Losses whose parameters are tied to the batch, fitted to the tiny batch of N samples: the widest
# head layer and loss parameters. W-MSE whitens sub-batches of whitening_size samples, which must
# divide the batch and outnumber the embedding's dimensions: one sub-batch of all N samples (so the
# loss is independent of the batch order, as for the others), heads N / 2 wide.
TINY_FIT: dict[str, dict] = {"wmse": {"max_width": N // 2, "loss": {"whitening_size": N}}}

# Losses undefined on a collapsed batch at their recipes' settings, and the loss parameters that
# define them there. W-MSE inverts each sub-batch's covariance, singular when the samples coincide
# (the sources' Cholesky factorisation fails); its shrinkage eps > 0 makes it positive definite.
DEFINED_AT_COLLAPSE: dict[str, dict] = {"wmse": {"eps": 0.5}}

# Losses whose penalty on collapse comes from state carried across steps, and the loss parameters
# that let one step fill that state with the batch's own embeddings. MoCo v2 contrasts with a
# queue of earlier keys: a collapsed encoder fills it with copies of the positive key, which then
# scores log(1 + K), while the random initial queue scores collapsed and diverse queries alike.
# The comparison is taken at a second step on the same embeddings, with a queue of one batch.
COLLAPSE_PENALISED_THROUGH_STATE: dict[str, dict] = {"mocov2": {"queue_size": N}}


# Tiny tensors: one intra-op thread (the conftest fixture), for every test here.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_method(name: str, seed: int = 0, loss_params: dict | None = None) -> Method:
    """``name`` with its CPU-demo recipe's parameters (``TINY_FIT`` and ``loss_params`` over them),
    narrow heads of the recipe's depth, float64."""
    config = resolve_config(name, "fashion-mnist")
    fit = TINY_FIT.get(name, {})
    projector = tuple(min(width, fit.get("max_width", 16)) for width in config.projector)
    embedding = projector[-1] if projector else FEATURES
    predictor = (*(min(width, 8) for width in config.predictor[:-1]), embedding) if config.predictor else ()
    torch.manual_seed(seed)
    method = get_method(name)(
        TinyConvNet((4, 8, FEATURES)),
        FEATURES,
        projector,
        predictor,
        loss_params={**config.loss, **fit.get("loss", {}), **(loss_params or {})},
        method_params=config.method_params,
    )
    return method.double().train()


def images(seed: int, collapsed: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if collapsed:  # every sample the same image
        return torch.randn(1, 3, IMAGE, IMAGE, generator=g, dtype=torch.float64).expand(N, -1, -1, -1).clone()
    return torch.randn(N, 3, IMAGE, IMAGE, generator=g, dtype=torch.float64)


def loss_of_embeddings(method: Method, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """The method's loss on given embeddings, with the heads its declarations ask for: an identity
    predictor (p = z) and a target network that agrees with the online one (target = z)."""
    heads = {}
    both = method.online_sees_both_views
    if method.uses_predictor:
        heads.update(p_a=z_a, p_b=z_b) if both else heads.update(p_a=z_a)
    if method.uses_momentum_target:
        heads.update(target_a=z_a.detach(), target_b=z_b.detach()) if both else heads.update(target_b=z_b.detach())
    return method.loss(z_a, z_b if both else None, **heads)[0]


def _grads_finite(module: torch.nn.Module) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in module.parameters())


# --- documentation and recipes ---------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_documented(name):
    cls = get_method(name)
    module = inspect.getmodule(cls)
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a class docstring (one line: method, paper)"
    assert len((module.__doc__ or "").strip()) > 200, (
        f"{module.__name__} needs a docstring with the paper and equations"
    )
    assert cls.loss is not Method.loss


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("table_name", RECIPE_FILES)
def test_recipe_complete_and_valid(name, table_name):
    cls = get_method(name)
    table = load_recipe_table(table_name)
    row = recipe_row(name, table)  # the table's row, or the one the method carries
    assert row.source.strip()
    assert row.optimizer in OPTIMIZERS and row.base_lr > 0 and row.weight_decay >= 0
    assert row.batch_size > 0 and row.epochs > 0 and 0 <= row.warmup_epochs <= row.epochs
    assert row.projector and all(width > 0 for width in row.projector)
    config = resolve_config(name, table.datasets[0])  # validates, and checks the declarations
    # Every required loss parameter, and optional ones (a loss variant) only among those declared.
    assert set(cls.loss_param_names) <= set(config.loss) <= {*cls.loss_param_names, *cls.loss_param_defaults}
    required = set(cls.required_method_params())
    assert required <= set(config.method_params) <= {*required, *cls.optional_method_params()}
    assert bool(config.predictor) == cls.uses_predictor
    ViewPairAugmentation(cls.augmentation, table.image_size, (0.5,) * 3, (0.25,) * 3)


# --- the loss --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_loss_is_finite_and_trains_every_online_part(name):
    method = tiny_method(name)
    out = method(images(1), images(2))
    assert isinstance(out, StepOutput)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(torch.isfinite(term) for term in out.terms.values())
    assert out.representation.shape == (N, FEATURES) and out.embedding.shape == (N, method.embedding_dim)
    out.loss.backward()
    parts = {"backbone": method.backbone, "projector": method.projector}
    if method.predictor is not None:
        parts["predictor"] = method.predictor
    for part, module in parts.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), f"no gradient reaches the {part}"
        assert any(g.abs().sum() > 0 for g in grads), f"zero gradient in the {part}"
    assert _grads_finite(method)
    for _online, target in method.momentum_pairs():
        assert target.grad is None and not target.requires_grad


@pytest.mark.parametrize("name", METHODS)
def test_loss_ignores_batch_order(name):
    method = tiny_method(name)
    x_a, x_b = images(3), images(4)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    loss = copy.deepcopy(method)(x_a, x_b).loss  # fresh copies: a stateful loss starts alike
    permuted = copy.deepcopy(method)(x_a[perm], x_b[perm]).loss
    torch.testing.assert_close(permuted, loss, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DEFINED_AT_COLLAPSE))
def test_a_loss_undefined_at_collapse_says_so_with_a_non_finite_value(name):
    method = tiny_method(name)
    x = images(5, collapsed=True)
    assert not torch.isfinite(method(x, x.clone()).loss)
    z = torch.randn(1, method.embedding_dim, dtype=torch.float64).expand(N, -1)
    assert not torch.isfinite(loss_of_embeddings(copy.deepcopy(method), z.clone(), z.clone()))


@pytest.mark.parametrize("name", METHODS)
def test_collapsed_inputs_give_finite_loss_and_gradients(name):
    # Identical images: batch norm maps the identical samples to zero embeddings, the most
    # degenerate input a loss meets in practice (normalising a zero vector, zero variance).
    method = tiny_method(name, loss_params=DEFINED_AT_COLLAPSE.get(name))
    x = images(5, collapsed=True)
    out = method(x, x.clone())
    assert torch.isfinite(out.loss), out.loss
    out.loss.backward()
    assert _grads_finite(method)
    # Constant, non-zero embeddings straight into the loss.
    z = torch.randn(1, method.embedding_dim, dtype=torch.float64).expand(N, -1)
    z_a, z_b = z.clone().requires_grad_(), z.clone().requires_grad_()
    loss = loss_of_embeddings(copy.deepcopy(method), z_a, z_b)
    assert torch.isfinite(loss)
    grads = torch.autograd.grad(loss, (z_a, z_b), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", [m for m in METHODS if get_method(m).loss_penalises_collapse])
def test_loss_scores_collapse_worse_than_diverse_agreeing_views(name):
    through_state = COLLAPSE_PENALISED_THROUGH_STATE.get(name)
    method = tiny_method(name, loss_params={**DEFINED_AT_COLLAPSE.get(name, {}), **(through_state or {})})
    g = torch.Generator().manual_seed(6)
    diverse = torch.randn(N, method.embedding_dim, generator=g, dtype=torch.float64)
    collapsed = torch.randn(1, method.embedding_dim, generator=g, dtype=torch.float64).expand(N, -1)

    def score(z: torch.Tensor) -> torch.Tensor:
        fresh = copy.deepcopy(method)
        if through_state is not None:
            loss_of_embeddings(fresh, z.clone(), z.clone())  # a training step fills the state
        return loss_of_embeddings(fresh, z.clone(), z.clone())

    loss_diverse, loss_collapsed = score(diverse), score(collapsed)
    assert loss_collapsed > loss_diverse, (loss_collapsed.item(), loss_diverse.item())


# --- state: momentum targets, learning rates, checkpoints ------------------------------------


@pytest.mark.parametrize("name", [m for m in METHODS if get_method(m).uses_momentum_target])
def test_momentum_target_follows_its_schedule(name):
    method = tiny_method(name)
    pairs = method.momentum_pairs()
    assert pairs and all(torch.equal(o, t) for o, t in pairs)  # starts as a copy
    grouped = {id(p) for group in parameter_groups(method, 0.1, 0.0) for p in group["params"]}
    assert not grouped & {id(t) for _, t in pairs}  # never optimised
    with torch.no_grad():  # stand-in for an optimiser step
        for online, _ in pairs:
            online.add_(torch.randn_like(online))
    before = [t.clone() for _, t in pairs]
    step, total = 3, 10
    tau = method.target_momentum(step, total)
    assert 0.0 <= tau <= 1.0 and not math.isnan(tau)
    method.after_optimizer_step(step, total)
    for (online, target), old in zip(pairs, before):
        torch.testing.assert_close(target, tau * old + (1 - tau) * online, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", METHODS)
def test_constant_lr_parameters_are_trainable_parameters_of_the_method(name):
    method = tiny_method(name)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert {id(p) for p in method.constant_lr_parameters()} <= trainable


@pytest.mark.parametrize("name", METHODS)
def test_state_survives_a_state_dict_round_trip(name):
    trained = tiny_method(name, seed=0)
    x_a, x_b = images(7), images(8)
    trained(x_a, x_b)  # updates running statistics and any loss state
    for online, _target in trained.momentum_pairs():
        with torch.no_grad():
            online.add_(0.1)
    trained.after_optimizer_step(0, 10)
    restored = tiny_method(name, seed=1)
    restored.load_state_dict(trained.state_dict())
    for key, value in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    torch.testing.assert_close(restored(x_a, x_b).loss, trained(x_a, x_b).loss, rtol=0, atol=0)
