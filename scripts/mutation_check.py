"""Remove each piece of method state, schedule and recipe plumbing in turn; a test must go red.

Each mutation below replaces one exact snippet of the code (the state or rule it names) in the
checkout, runs the tests that guard it, and puts the file back (also when interrupted). The files
it mutates must have no uncommitted changes. The check passes when every mutation makes at
least one of those tests fail. Run from the repository root:

    .venv/bin/python scripts/mutation_check.py            # every mutation (a few minutes)
    .venv/bin/python scripts/mutation_check.py tico-c     # the ones whose name contains "tico-c"
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation(
        "swav-codes-gradient",
        "methods/swav.py",
        "        with torch.no_grad():  # the codes are targets: no gradient flows through them\n",
        "        if True:\n",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-prototypes-normalised",
        "methods/swav.py",
        "        super().after_optimizer_step(step, total_steps)\n        self.normalise_prototypes()",
        "        super().after_optimizer_step(step, total_steps)",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-prototypes-frozen",
        "methods/swav.py",
        "            self.prototypes.weight.grad = None",
        "            pass",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-codes-from-local-crops",
        "methods/swav.py",
        "            [self.scores(z_a), self.scores(z_b)],\n            [self.scores(z) for z in z_local],",
        "            [self.scores(z) for z in (z_a, z_b, *z_local)],\n            [],",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-sinkhorn-global-batch",
        "methods/swav.py",
        "        q /= _all_reduce_sum(q.sum(dim=1, keepdim=True), distributed)",
        "        q /= q.sum(dim=1, keepdim=True)",
        ("tests/test_losses_distributed.py", "tests/test_ddp.py"),
    ),
    Mutation(
        "swav-sinkhorn-columns",
        "methods/swav.py",
        "        q /= q.sum(dim=0, keepdim=True)  # each sample's total: 1/B\n",
        "",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-queue-not-filled",
        "methods/swav.py",
        "        if self.queue_size and self.training:\n",
        "        if False:\n",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-queue-before-its-epoch",
        "methods/swav.py",
        "        if self.queue_size and bool(self.queue_in_use):\n",
        "        if self.queue_size:\n",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "swav-queue-rank-blocks",
        "methods/swav.py",
        "embeddings = gather_with_grad(embeddings.transpose(0, 1).contiguous()).transpose(0, 1)",
        "embeddings = gather_with_grad(embeddings.flatten(0, 1)).unflatten(0, (2, -1))",
        ("tests/test_ddp.py",),
    ),
    Mutation(
        "multicrop-pairs-of-globals-only",
        "ssl_bench/method.py",
        "for second in range(first + 1, len(crops))]",
        "for second in range(first + 1, 2)]",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "multicrop-one-pass",
        "methods/swav.py",
        "    views_in_one_pass = True\n",
        "",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "multicrop-local-views-dropped",
        "ssl_bench/method.py",
        "h_local = self.backbone(torch.cat(list(local_views))) if local_views else None",
        "h_local = None",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "multicrop-loader-local-crops",
        "ssl_bench/data/loaders.py",
        "                local = self.local_crops(source)",
        "                pass",
        ("tests/test_swav.py", "tests/test_folder_pipeline.py"),
    ),
    Mutation(
        "config-omitted-factory-default",
        "ssl_bench/config.py",
        "f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default",
        "f.default",
        ("tests/test_swav.py",),
    ),
    Mutation(
        "tico-c-update",
        "methods/tico.py",
        "            self.C.copy_(C_next)",
        "            pass",
        (
            "tests/test_loss_tico.py",
            "tests/test_momentum_target.py::test_a_crashed_run_resumes_to_the_same_weights_target_included",
        ),
    ),
    Mutation(
        "tico-c-batch-gradient",
        "methods/tico.py",
        "(1.0 - beta) * (u_a.T @ u_a) / n",
        "(1.0 - beta) * (u_a.T @ u_a).detach() / n",
        ("tests/test_loss_tico.py",),
    ),
    Mutation(
        "tico-momentum-views",
        "methods/tico.py",
        "    online_sees_both_views = False\n",
        "",
        ("tests/test_loss_tico.py",),
    ),
    Mutation(
        "wmse-sub-batches",
        "methods/wmse.py",
        ".view(-1, whitening_size).to(z_a.device)",
        ".view(1, -1).to(z_a.device)",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-normalisation",
        "methods/wmse.py",
        "(F.normalize(white_a, dim=-1) * F.normalize(white_b, dim=-1)).sum(dim=-1)",
        "(white_a * white_b).sum(dim=-1)",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-whitening-gradient",
        "methods/wmse.py",
        "    return centred @ inverse.mT",
        "    return centred @ inverse.mT.detach()",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-shrinkage",
        "methods/wmse.py",
        "shrunk = (1.0 - eps) * cov + eps * eye",
        "shrunk = cov + eps * eye",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-unbiased-covariance",
        "methods/wmse.py",
        "cov = centred.mT @ centred / (m - 1)",
        "cov = centred.mT @ centred / m",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-paired-sub-batches",
        "methods/wmse.py",
        "white_b = whiten(z_b[groups], eps)",
        "white_b = whiten(z_b[groups.flip(-1)], eps)",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-mean-over-iterations",
        "methods/wmse.py",
        "    return total / w_iter",
        "    return total",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-detach-view-b",
        "methods/wmse.py",
        "        if detach_view_b:",
        "        if False:",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-permutation-generator",
        "methods/wmse.py",
        "torch.randperm(n, generator=generator)",
        "torch.randperm(n)",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-permutation-count",
        "methods/wmse.py",
        "            self.permutation_draws.fill_(draws + 1)",
        "            pass",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-permutation-seed-state",
        "methods/wmse.py",
        'self.register_buffer("permutation_seed", torch.tensor(seed, dtype=torch.int64))',
        "self.permutation_seed = torch.tensor(seed, dtype=torch.int64)",
        ("tests/test_loss_wmse.py",),
    ),
    Mutation(
        "wmse-singular-covariance",
        "methods/wmse.py",
        "    factor = torch.where((info == 0)[..., None, None], factor, factor.new_full((), math.nan))\n",
        "",
        ("tests/test_loss_wmse.py", "tests/test_method_contract.py"),
    ),
    Mutation(
        "mocov2-queue-update",
        "methods/mocov2.py",
        "        if self.training:\n            self.enqueue_keys(",
        "        if False:\n            self.enqueue_keys(",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-enqueue-in-eval",
        "methods/mocov2.py",
        "        if self.training:\n            self.enqueue_keys(",
        "        if True:\n            self.enqueue_keys(",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-keys-constant",
        "methods/mocov2.py",
        "    k = F.normalize(k.detach(), dim=1)",
        "    k = F.normalize(k, dim=1)",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-queue-constant",
        "methods/mocov2.py",
        "q @ queue.detach().to(q.dtype).T",
        "q @ queue.to(q.dtype).T",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-positive-first",
        "methods/mocov2.py",
        "torch.cat([positive, negatives], dim=1)",
        "torch.cat([negatives, positive], dim=1)",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-temperature",
        "methods/mocov2.py",
        "torch.cat([positive, negatives], dim=1) / temperature",
        "torch.cat([positive, negatives], dim=1)",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-fifo-pointer",
        "methods/mocov2.py",
        "    pointer.copy_((pointer + batch) % size)",
        "    pass",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-queue-snapshot",
        "methods/mocov2.py",
        "        negatives = self.queue.clone()",
        "        negatives = self.queue",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-queue-per-direction",
        "methods/mocov2.py",
        "mocov2_loss(q, k, negatives[i], temperature)",
        "mocov2_loss(q, k, negatives[0], temperature)",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-unit-length-queue",
        "methods/mocov2.py",
        'self.register_buffer("queue", F.normalize(queue, dim=-1))',
        'self.register_buffer("queue", queue)',
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-queue-state",
        "methods/mocov2.py",
        'self.register_buffer("queue", F.normalize(queue, dim=-1))',
        "self.queue = F.normalize(queue, dim=-1)",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "mocov2-gathered-keys",
        "methods/mocov2.py",
        "        if resolve_gather(None):",
        "        if False:",
        ("tests/test_ddp.py::test_two_ranks_equal_one_process_on_the_global_batch",),
    ),
    Mutation(
        "mocov2-batch-divides-queue",
        "methods/mocov2.py",
        "        if size % batch_size:",
        "        if False:",
        ("tests/test_loss_mocov2.py",),
    ),
    Mutation(
        "momentum-final",
        "ssl_bench/method.py",
        'float(params["momentum_final"])',
        "1.0",
        ("tests/test_momentum_target.py", "tests/test_loss_mocov2.py"),
    ),
    Mutation(
        "adam-l2-weight-decay",
        "ssl_bench/train/optim.py",
        'adam = torch.optim.Adam if key == "adam" else torch.optim.AdamW',
        "adam = torch.optim.AdamW",
        ("tests/test_optim.py",),
    ),
    Mutation(
        "ema-update",
        "ssl_bench/method.py",
        "            ema_update(pairs, self.target_momentum(step, total_steps))",
        "            pass",
        ("tests/test_momentum_target.py",),
    ),
    Mutation(
        "momentum-schedule",
        "ssl_bench/method.py",
        "    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0",
        "    return base",
        ("tests/test_momentum_target.py",),
    ),
    Mutation(
        "target-frozen",
        "ssl_bench/method.py",
        "copy.deepcopy(backbone).requires_grad_(False)",
        "copy.deepcopy(backbone)",
        ("tests/test_momentum_target.py",),
    ),
    Mutation(
        "byol-stop-gradient",
        "methods/byol.py",
        "F.normalize(z_target.detach(), dim=1)",
        "F.normalize(z_target, dim=1)",
        ("tests/test_loss_byol.py",),
    ),
    Mutation(
        "simsiam-stop-gradient",
        "methods/simsiam.py",
        "F.normalize(z.detach(), dim=1)",
        "F.normalize(z, dim=1)",
        ("tests/test_loss_simsiam.py",),
    ),
    Mutation(
        "simsiam-fixed-predictor-lr",
        "methods/simsiam.py",
        "        return list(self.predictor.parameters())",
        "        return []",
        ("tests/test_loss_simsiam.py",),
    ),
    Mutation(
        "mocov3-keys-constant",
        "methods/mocov3.py",
        "k = F.normalize(k.detach(), dim=1)",
        "k = F.normalize(k, dim=1)",
        ("tests/test_loss_mocov3.py",),
    ),
    Mutation(
        "warmup",
        "ssl_bench/train/optim.py",
        "        return peak_lr * step / warmup_steps",
        "        return peak_lr",
        ("tests/test_optim.py",),
    ),
    Mutation(
        "lars-exclusion",
        "ssl_bench/train/optim.py",
        "    return p.ndim == 1",
        "    return False",
        ("tests/test_optim.py",),
    ),
    Mutation(
        "solo-learn-clip",
        "ssl_bench/train/optim.py",
        "            if self.clip_lr:",
        "            if False:",
        ("tests/test_optim.py",),
    ),
    Mutation(
        "solo-learn-denominator",
        "ssl_bench/train/optim.py",
        "(g_norms + wd * p_norms + SOLO_LEARN_EPS)",
        "(g_norms + SOLO_LEARN_EPS)",
        ("tests/test_optim.py",),
    ),
    Mutation(
        "loss-scale",
        "ssl_bench/method.py",
        "loss=loss * self.loss_scale if self.loss_scale != 1.0 else loss,",
        "loss=loss,",
        ("tests/test_resolved_config.py",),
    ),
    Mutation(
        "schedule-end-value",
        "ssl_bench/train/trainer.py",
        "self.warmup_steps, self.config.lr_end_factor)",
        "self.warmup_steps, 0.001)",
        ("tests/test_resolved_config.py",),
    ),
    Mutation(
        "recipe-views",
        "ssl_bench/train/assemble.py",
        "ViewPairAugmentation(config.view_pair(),",
        "ViewPairAugmentation(get_method(config.method).augmentation,",
        ("tests/test_resolved_config.py", "tests/test_recipe_fidelity.py"),
    ),
    Mutation(
        "zero-init-residual",
        "ssl_bench/train/assemble.py",
        "build_backbone(config.backbone, config.zero_init_residual)",
        "build_backbone(config.backbone)",
        ("tests/test_resolved_config.py",),
    ),
    Mutation(
        "head-options",
        "ssl_bench/method.py",
        'build_projector(feature_dim, dims, **self.head_options["projector"])',
        "build_projector(feature_dim, dims)",
        ("tests/test_recipe_fidelity.py",),
    ),
    Mutation(
        "lars-variant",
        "ssl_bench/train/assemble.py",
        "lars_variant=config.lars_variant, ",
        "",
        ("tests/test_recipe_fidelity.py", "tests/test_resolved_config.py"),
    ),
]


def _uncommitted(paths: list[str]) -> list[str]:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [line[3:] for line in status.splitlines()]


def pytest(tests: tuple[str, ...]) -> int:
    # -x: one failure is enough.
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).returncode


def run(mutation: Mutation) -> tuple[bool, float]:
    path = ROOT / mutation.path
    original = path.read_text()
    if original.count(mutation.original) != 1:
        raise SystemExit(f"{mutation.name}: the snippet to mutate is not in {mutation.path} exactly once")
    path.write_text(original.replace(mutation.original, mutation.replacement))
    start = time.monotonic()
    try:
        returncode = pytest(mutation.tests)
    finally:
        path.write_text(original)
    return returncode == 1, time.monotonic() - start  # 1: tests ran and failed (2+: they did not run)


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or any(word in m.name for word in argv)]
    dirty = _uncommitted(sorted({m.path for m in chosen}))
    if dirty:
        raise SystemExit(f"commit or stash these first, the check edits them: {', '.join(dirty)}")
    # Control: unmutated, the same tests pass, so a red run below is the mutation's doing.
    guarding = tuple(dict.fromkeys(test for m in chosen for test in m.tests))
    if pytest(guarding) != 0:
        raise SystemExit("the guarding tests fail without any mutation: fix them first")
    survivors = []
    print(f"{'mutation':<28} {'file':<26} {'caught':<7} seconds")
    for mutation in chosen:
        caught, seconds = run(mutation)
        print(f"{mutation.name:<28} {mutation.path:<26} {'yes' if caught else 'NO':<7} {seconds:.0f}", flush=True)
        if not caught:
            survivors.append(mutation.name)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutations caught by a failing test")
    if survivors:
        print("survived: " + ", ".join(survivors))
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
