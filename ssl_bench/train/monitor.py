"""Watching a run while it pre-trains: an online linear probe and collapse diagnostics.

:class:`TrainingMonitor` is fed every training step's detached representation (backbone output
of view a), embedding (projector output of view a) and labels, and at each epoch's end returns
the numbers the trainer adds to that epoch's row of ``metrics.jsonl``:

``online_probe_top1``
    Train accuracy (%) of a linear classifier trained alongside pre-training on the detached
    representation, each batch scored *before* the probe learns from it. It never sends
    gradients into the method. Unlabelled samples (label -1, e.g. STL-10's unlabeled split) are
    ignored; ``None`` when an epoch had no labelled sample.
``online_probe_loss``
    The probe's mean cross-entropy over the epoch.

Two probes (``RunConfig.online_probe``, ssl_bench.config.ONLINE_PROBES):

``solo_learn``
    solo-learn's online classifier exactly as vturrisi/solo-learn trains it (commit 9187ea39,
    ``solo/methods/base.py``): ``nn.Linear(features_dim, num_classes)`` (line 210) on the detached
    backbone output of each large crop (``forward``, line 433), cross-entropy ignoring label -1
    (line 469), averaged over the crops (lines 512, 521), added to the method's loss (e.g.
    ``solo/methods/barlow_twins.py`` line 129, after the method's own ``scale_loss``), so that one
    backward fills both. Its parameters are a group of the run's optimiser (``learnable_params``,
    lines 322-330) with lr ``classifier_lr`` x batch / 256 (``solo/args/pretrain.py`` lines
    153-157) and weight decay 0, under the run's LARS rule (``solo/utils/lars.py`` line 140: the
    weight is adapted, the bias left out with ``exclude_bias_n_norm``) and warmup + cosine schedule.
    The classifier is part of the method (``Method.online_probe``, built by
    ssl_bench.train.assemble), so DDP averages its gradients over ranks as Lightning's DDP does.
    It sees both views where the online backbone embeds both; a method whose online network sees
    view a only (TiCo) trains it on view a. ``online_probe_top1`` counts both crops' predictions
    (solo-learn's ``train_acc1``, the mean over crops).
``bn_linear_sgd``
    BatchNorm without affine parameters (standardises the features), then a Linear, trained on
    view a's representation with an SGD of its own (``MonitorConfig``), never touching the run's
    optimiser: a probe whose learning does not depend on the method's optimiser and lr.
``embedding_std``
    Mean over dimensions of the per-dimension standard deviation of the L2-normalised
    embeddings (SimSiam's collapse monitor): 0 for a collapsed (constant) output, about
    1/sqrt(D) for embeddings spread evenly over the unit sphere in D dimensions.
``rankme_representation``, ``rankme_embedding``
    Effective rank (RankMe, Garrido et al., ICML 2023, arXiv:2210.02885): exp of the entropy
    of the normalised singular values. 1 for a rank-one (collapsed) matrix, min(N, D) for N x D
    rows of equal singular values; it is bounded by the number of rows used.
``offdiag_corr_representation``, ``offdiag_corr_embedding``
    Mean absolute off-diagonal Pearson correlation between the dimensions
    (:func:`mean_abs_offdiag_correlation`): how far from decorrelated the features are, the
    quantity VICReg's covariance term and Barlow Twins' redundancy-reduction term drive down on
    the embedding. Estimated from ``diagnostic_rows`` rows, so even independent dimensions read
    about sqrt(2 / (pi N)) (0.035 at N = 512), not 0.

The probe's tallies (correct, labelled, loss sum, batches) stay on the device and are read back
once, in :meth:`TrainingMonitor.end_epoch`: a training step adds no host sync of its own. The
loss sum is float64, so the logged mean equals a Python-float sum of the per-batch losses. When
every label is known to be >= 0 (``all_labelled``, a property of the dataset that the caller
checks once) the probe takes the whole batch. Otherwise the unlabelled rows are masked out of
the loss (and of the ``bn_linear_sgd`` probe's BatchNorm statistics) arithmetically (fixed
shapes, nothing read back). A batch with fewer than two labelled rows, which BatchNorm cannot
standardise, leaves the ``bn_linear_sgd`` probe, its optimiser and the tallies exactly as they
were (applied with ``torch.where``); solo-learn's classifier takes a zero loss from a batch
without labels (solo-learn's mean over no rows would be NaN).

The diagnostics are computed at epoch end on the last ``MonitorConfig.diagnostic_rows`` rows
the epoch produced (its last batches: cheap, no extra forward pass). Under DDP every rank keeps
its own tallies and diagnostics (and its own ``bn_linear_sgd`` probe); rank 0's are logged. The
probe's weights and the rows kept so far are part of :meth:`TrainingMonitor.state_dict`, which
the trainer checkpoints (solo-learn's classifier is also in the method's state, and its momentum
in the run's optimiser state), so a resumed run continues the same probe; the evaluation reads
the final probe from this state (ssl_bench.eval.online).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.method import at_least_fp32


@dataclass(frozen=True)
class MonitorConfig:
    """Settings of the ``bn_linear_sgd`` probe and the diagnostics (no effect on training)."""

    # The bn_linear_sgd probe's own SGD with momentum on BatchNorm-standardised features: the
    # representation's scale changes as pre-training goes, and standardising keeps one learning
    # rate usable throughout. (solo-learn's classifier takes the run's optimiser instead.)
    probe_lr: float = 0.1
    probe_momentum: float = 0.9
    probe_weight_decay: float = 0.0
    diagnostic_rows: int = 512  # rows of the epoch's last batches used for the diagnostics


def rankme(matrix: Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank of an (N, D) matrix: exp(-sum_k p_k log p_k), p_k = s_k / sum(s) + eps.

    s are the singular values (no centring, as in the paper). A zero matrix has rank 0.
    """
    singular = torch.linalg.svdvals(matrix.detach().double())
    total = singular.sum()
    if total <= torch.finfo(torch.float64).tiny:
        return 0.0
    p = singular / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def mean_abs_offdiag_correlation(features: Tensor) -> float | None:
    """1 / (D' (D' - 1)) sum_{i != j} |corr(f_i, f_j)| over the D' non-constant columns of (N, D) ``features``.

    Pearson correlation over the N rows, in float64. Constant columns (a dead unit; a collapsed
    dimension) have no correlation and are left out; None when fewer than two columns vary.
    """
    x = features.detach().double()
    x = x - x.mean(dim=0)
    norms = x.norm(dim=0)
    # Relative to the widest column: a constant column's centred norm is rounding noise.
    varying = norms > 1e-8 * norms.max()
    d = int(varying.sum())
    if d < 2:
        return None
    unit = x[:, varying] / norms[varying]
    correlation = unit.T @ unit  # (D', D'), ones on the diagonal
    return float((correlation.abs().sum() - correlation.diagonal().abs().sum()) / (d * (d - 1)))


def embedding_std(embeddings: Tensor) -> float:
    """Mean per-dimension std of the L2-normalised rows of (N, D) ``embeddings``."""
    normalised = F.normalize(embeddings.detach().float(), dim=1)
    return float(normalised.std(dim=0).mean())


class OnlineProbe(nn.Module):
    """A linear layer on the features, after a BatchNorm without affine parameters (standardising
    them) when ``standardise``: the ``bn_linear_sgd`` probe; without it, solo-learn's classifier."""

    def __init__(self, feature_dim: int, num_classes: int, standardise: bool = True) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm1d(feature_dim, affine=False) if standardise else nn.Identity()
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.norm(features))


def new_probe(feature_dim: int, num_classes: int, seed: int, standardise: bool) -> OnlineProbe:
    """An :class:`OnlineProbe` initialised from a private RNG stream seeded with ``seed``.

    Creating the probe must not shift the global RNG that the method's own randomness draws from,
    so that training with a probe stays bit-identical to training without one.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return OnlineProbe(feature_dim, num_classes, standardise)


class TrainingMonitor:
    """Online probe + collapse diagnostics of one run; see the module docstring."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        device: torch.device,
        *,
        seed: int,
        all_labelled: bool = False,
        config: MonitorConfig = MonitorConfig(),
        classifier: nn.Module | None = None,
    ) -> None:
        """``all_labelled``: every label the probe will get is >= 0 (no unlabelled samples in
        the dataset), so the probe needs no mask. ``classifier``: solo-learn's classifier, which
        the method owns and the run's optimiser steps (:meth:`classifier_loss`); without it the
        monitor trains a ``bn_linear_sgd`` probe of its own (:meth:`observe`)."""
        self.config = config
        self.device = torch.device(device)
        self.all_labelled = all_labelled
        self.probe: nn.Module | None = classifier
        # The bn_linear_sgd probe's own optimiser; None for solo-learn's classifier.
        self.optimizer: torch.optim.Optimizer | None = None
        if classifier is None and num_classes >= 2:
            self.probe = new_probe(feature_dim, num_classes, seed, standardise=True).to(self.device)
            self.optimizer = torch.optim.SGD(
                self.probe.parameters(),
                lr=config.probe_lr,
                momentum=config.probe_momentum,
                weight_decay=config.probe_weight_decay,
            )
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._set_tallies(correct=0, labelled=0, loss_sum=0.0, loss_batches=0)
        self.representations: list[Tensor] = []
        self.embeddings: list[Tensor] = []

    def _set_tallies(self, *, correct: int, labelled: int, loss_sum: float, loss_batches: int) -> None:
        # On the device, so that adding to them never waits for the step's kernels.
        def tally(value: float, dtype: torch.dtype) -> Tensor:
            return torch.tensor(value, dtype=dtype, device=self.device)

        self.correct, self.labelled = tally(correct, torch.int64), tally(labelled, torch.int64)
        self.loss_sum, self.loss_batches = tally(loss_sum, torch.float64), tally(loss_batches, torch.int64)

    def tallies(self) -> dict[str, Any]:
        """The probe's running tallies of this epoch as Python numbers (one read-back)."""
        correct, labelled, loss_sum, loss_batches = torch.stack(
            [self.correct.double(), self.labelled.double(), self.loss_sum, self.loss_batches.double()]
        ).tolist()
        return {
            "correct": int(correct),
            "labelled": int(labelled),
            "loss_sum": loss_sum,
            "loss_batches": int(loss_batches),
        }

    # --- per step ------------------------------------------------------------------------
    def classifier_loss(self, representations: Sequence[Tensor], labels: Tensor | None) -> Tensor:
        """solo-learn's classifier on each view's detached representation: the mean over the views
        of the cross-entropy over the labelled rows, for the caller to add to the method's loss.

        Called before the step's backward, so each batch is scored before the classifier learns
        from it. ``labels`` None counts as a batch without labels (a zero loss, but a gradient all
        the same, which DDP needs from every parameter of the module it wraps).
        """
        assert self.probe is not None and self.optimizer is None, "no solo-learn classifier in this monitor"
        if labels is None:
            labels = torch.full((len(representations[0]),), -1, dtype=torch.long)
        labels = labels.to(self.device)
        # Python int when every row is labelled: no kernel, no read-back.
        labelled = len(labels) if self.all_labelled else (labels >= 0).sum()
        divisor = labelled if self.all_labelled else labelled.clamp(min=1)
        losses, correct = [], torch.zeros((), dtype=torch.int64, device=self.device)
        with torch.enable_grad(), torch.autocast(self.device.type, enabled=False):
            self.probe.train()
            for representation in representations:
                logits = self.probe(at_least_fp32(representation.detach()))
                # Sum over the labelled rows / their count: F.cross_entropy(ignore_index=-1)'s
                # mean, but 0 rather than NaN for a batch without labels.
                losses.append(F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum") / divisor)
                # argmax is never -1, so unlabelled rows never count as correct.
                correct = correct + (logits.detach().argmax(dim=1) == labels).sum()
            loss = sum(losses[1:], losses[0]) / len(losses)
        self.correct += correct
        self.labelled += labelled * len(representations)
        self.loss_sum += loss.detach().double()
        self.loss_batches += 1
        return loss

    def observe(self, representation: Tensor | None, embedding: Tensor | None, labels: Tensor | None) -> None:
        """Take one training step's outputs (any dtype, with or without grad; they are detached).

        The representation goes to the diagnostics and, without a solo-learn classifier, trains
        the monitor's own probe."""
        if representation is not None:
            features = representation.detach().float()
            self._keep(self.representations, features)
            if labels is not None:
                self._probe_step(features, labels.to(features.device))
        if embedding is not None:
            self._keep(self.embeddings, embedding.detach().float())

    def _keep(self, rows: list[Tensor], batch: Tensor) -> None:
        # clone: the caller's tensor may be reused or modified in place after the step.
        rows.append(batch.clone())
        while len(rows) > 1 and sum(len(r) for r in rows[1:]) >= self.config.diagnostic_rows:
            rows.pop(0)

    def _probe_step(self, features: Tensor, labels: Tensor) -> None:
        if self.probe is None or self.optimizer is None:  # no probe, or solo-learn's (classifier_loss)
            return
        if self.all_labelled and len(labels) < 2:  # BatchNorm needs two samples to standardise a batch
            return
        with torch.enable_grad(), torch.autocast(features.device.type, enabled=False):
            self.probe.train()
            self.optimizer.zero_grad(set_to_none=True)
            if self.all_labelled:
                logits = self.probe(features)
                loss = F.cross_entropy(logits, labels)
                loss.backward()
                self.optimizer.step()
            else:
                logits, loss, labelled = self._masked_forward(features, labels)
                taken = labelled >= 2
                (loss * taken).backward()
                self._step_where(taken)
        # argmax is never -1, so unlabelled rows never count as correct.
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        loss = loss.detach().double()
        if self.all_labelled:
            self.correct += correct
            self.labelled += len(labels)
            self.loss_sum += loss
            self.loss_batches += 1
        else:
            self.correct += correct * taken
            self.labelled += labelled * taken
            self.loss_sum += torch.where(taken, loss, 0.0)
            self.loss_batches += taken.long()

    def _masked_forward(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The probe in training mode on the labelled rows only, with the batch's shape kept.

        Batch statistics over the labelled rows (biased variance to standardise, unbiased for
        the running estimate, as ``nn.BatchNorm1d`` does); unlabelled rows are standardised to 0
        and weigh nothing in the mean cross-entropy. Returns (logits, loss, labelled count);
        the running statistics are updated only when at least two rows are labelled.
        """
        assert isinstance(self.probe, OnlineProbe) and isinstance(self.probe.norm, nn.BatchNorm1d)
        norm = self.probe.norm
        labelled_rows = (labels >= 0).unsqueeze(1)
        count = labelled_rows.sum()
        divisor = count.clamp(min=1).to(features.dtype)
        mean = torch.where(labelled_rows, features, 0.0).sum(dim=0) / divisor
        centred = torch.where(labelled_rows, features - mean, 0.0)
        variance = centred.square().sum(dim=0) / divisor
        logits = self.probe.linear(centred * torch.rsqrt(variance + norm.eps))
        per_row = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        loss = torch.where(labelled_rows.squeeze(1), per_row, 0.0).sum() / divisor
        assert norm.running_mean is not None and norm.running_var is not None and norm.momentum is not None
        with torch.no_grad():
            taken = count >= 2
            unbiased = variance * divisor / (divisor - 1).clamp(min=1)
            norm.running_mean.copy_(
                torch.where(taken, torch.lerp(norm.running_mean, mean, norm.momentum), norm.running_mean)
            )
            norm.running_var.copy_(
                torch.where(taken, torch.lerp(norm.running_var, unbiased, norm.momentum), norm.running_var)
            )
            assert norm.num_batches_tracked is not None
            norm.num_batches_tracked += taken.long()
        return logits, loss, count

    def _step_where(self, taken: Tensor) -> None:
        """An optimiser step that keeps the parameters and momentum buffers as they were where
        ``taken`` (a bool on the device) is false: a skipped batch without reading ``taken``."""
        assert self.probe is not None and self.optimizer is not None
        parameters = list(self.probe.parameters())
        before = [p.detach().clone() for p in parameters]
        buffers = [self.optimizer.state[p].get("momentum_buffer") for p in parameters]
        buffers_before = [None if b is None else b.clone() for b in buffers]
        self.optimizer.step()
        with torch.no_grad():
            for parameter, old in zip(parameters, before):
                parameter.copy_(torch.where(taken, parameter, old))
            for parameter, old in zip(parameters, buffers_before):
                buffer = self.optimizer.state[parameter].get("momentum_buffer")
                if buffer is not None:
                    # No buffer yet acts as a zero one: SGD's first step sets it to the gradient.
                    buffer.copy_(torch.where(taken, buffer, 0.0 if old is None else old))

    # --- per epoch -----------------------------------------------------------------------
    def end_epoch(self) -> dict[str, float | None]:
        """This epoch's numbers (see the module docstring); starts the next epoch's tallies."""
        rows = self.config.diagnostic_rows
        representation = torch.cat(self.representations)[-rows:] if self.representations else None
        embedding = torch.cat(self.embeddings)[-rows:] if self.embeddings else None
        tallies = self.tallies()
        correct, labelled = tallies["correct"], tallies["labelled"]
        loss_sum, loss_batches = tallies["loss_sum"], tallies["loss_batches"]
        values = {
            "online_probe_top1": 100.0 * correct / labelled if labelled else None,
            "online_probe_loss": loss_sum / loss_batches if loss_batches else None,
            "embedding_std": embedding_std(embedding) if embedding is not None else None,
            "rankme_representation": rankme(representation) if representation is not None else None,
            "rankme_embedding": rankme(embedding) if embedding is not None else None,
            "offdiag_corr_representation": (
                mean_abs_offdiag_correlation(representation) if representation is not None else None
            ),
            "offdiag_corr_embedding": mean_abs_offdiag_correlation(embedding) if embedding is not None else None,
        }
        self._reset_epoch()
        return {key: _finite_or_none(value) for key, value in values.items()}

    # --- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "probe": None if self.probe is None else self.probe.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "tallies": self.tallies(),
            "representations": [r.cpu() for r in self.representations],
            "embeddings": [e.cpu() for e in self.embeddings],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.probe is not None and state["probe"] is not None:
            self.probe.load_state_dict(state["probe"])
            if self.optimizer is not None:  # solo-learn's classifier: its momentum is the run optimiser's
                self.optimizer.load_state_dict(state["optimizer"])
        tallies = state["tallies"]
        self._set_tallies(
            correct=int(tallies["correct"]),
            labelled=int(tallies["labelled"]),
            loss_sum=float(tallies["loss_sum"]),
            loss_batches=int(tallies["loss_batches"]),
        )
        self.representations = [r.to(self.device) for r in state["representations"]]
        self.embeddings = [e.to(self.device) for e in state["embeddings"]]


def _finite_or_none(value: float | None) -> float | None:
    # NaN is not valid JSON; a diagnostic that could not be computed is recorded as null.
    return value if value is None or math.isfinite(value) else None
