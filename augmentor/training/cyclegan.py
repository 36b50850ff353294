"""The CycleGAN update rule (Zhu et al. 2017, "Unpaired image-to-image translation using cycle-consistent
adversarial networks"), with an optional structure-consistency term and the hallucination judge.

Networks: generators G_AB (phantom -> CT) and G_BA (CT -> phantom), PatchGAN discriminators D_A and D_B.
One step, in the order of the reference code (``models/cycle_gan_model.py``):

1. generators, with both discriminators frozen, minimise
   ``L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A) + λ_cyc (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)
   + λ_cyc λ_id (|G_AB(b) - b|_1 + |G_BA(a) - a|_1) [+ λ_s (L_shape^AB + L_shape^BA)]``;
2. discriminators on real images and on fakes drawn through a 50-image history pool (Shrivastava et al.
   2017: the discriminator also sees older fakes, which damps oscillation), each loss halved;
3. [structure consistency] the segmenter S_B on real labelled B slices and on the (detached) translations
   A -> B with the phantom's labels; the segmenter S_A on phantom slices and on the (detached) translations
   B -> A with the CT slices' labels;
4. [judge] the hallucination judge J_B on real labelled B slices only.

Structure consistency: the shape-consistency loss of Zhang, Yang & Zheng 2018 (CVPR, "Translating and
segmenting multimodal medical volumes with cycle- and shape-consistency generative adversarial network"),
both halves: a segmenter of domain B, trained on real B slices with their labels and on translated A slices
with A's labels, must find the phantom's anatomy in the translation, ``L_shape^AB = CE(S_B(G_AB(a)), y_a)``;
and a segmenter of domain A, trained on phantom slices (whose labels are their segmentation) and on
translated B slices with B's labels, must find the CT slice's anatomy in its B -> A translation,
``L_shape^BA = CE(S_A(G_BA(b)), y_b)``. The generators are penalised by both, so neither direction can move,
add or erase a structure without paying; the B -> A half needs labelled domain B (the simulated CT has it).

The judge is independent of the generators (it never sees a translation and gives them no gradient), so it
can later score translations for hallucinated or erased structures (Cohen et al. 2018).

Adversarial loss: least squares (Mao et al. 2017) as published; learning rate constant for the first
``decay_from`` of the steps, then linear to zero (computed from the algorithm's own step count, so a
checkpoint resumes the schedule exactly; a run resumed with more ``train.steps`` stretches the decay over
the new length).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augmentor.training.algorithm import Batch, adam
from augmentor.training.device import Precision
from augmentor.training.losses import AdversarialLoss, discriminator_loss, generator_loss
from augmentor.training.unpaired import DomainKey


class ImagePool:
    """The history of generated images (Shrivastava et al. 2017; CycleGAN's ``util/image_pool.py``).

    Until the pool is full every fake is stored and returned; then each fake is, with probability 1/2,
    swapped with a random stored one (the stored one is returned), or returned as it is.

    Args:
        size: images kept (0: no pool, fakes pass through).
        seed: seed of the pool's own CPU generator (no device synchronisation for its coin flips).
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.images: torch.Tensor | None = None  # (size, C, H, W) float32 once the first fakes arrive
        self.count = 0
        self.random = torch.Generator()
        self.random.manual_seed(seed)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) detached fakes -> (B, C, H, W) images for the discriminator."""
        if self.size == 0:
            return fakes
        fakes = fakes.detach().float()
        if self.images is None or self.images.shape[1:] != fakes.shape[1:]:
            self.images = torch.empty(self.size, *fakes.shape[1:], device=fakes.device)
            self.count = 0
        returned = []
        for fake in fakes:
            if self.count < self.size:
                self.images[self.count] = fake
                self.count += 1
                returned.append(fake)
            elif torch.rand((), generator=self.random).item() < 0.5:
                index = int(torch.randint(self.size, (), generator=self.random))
                returned.append(self.images[index].clone())
                self.images[index] = fake
            else:
                returned.append(fake)
        return torch.stack(returned)

    def state_dict(self) -> dict[str, Any]:
        stored = None if self.images is None else self.images[: self.count].clone()
        return {"images": stored, "count": self.count, "random": self.random.get_state()}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.count = int(state["count"])
        self.images = None
        if state["images"] is not None:
            stored = state["images"].to(device, torch.float32)
            self.images = torch.empty(self.size, *stored.shape[1:], device=device)
            self.images[: self.count] = stored
        self.random.set_state(state["random"].to("cpu", torch.uint8))


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, L, H, W) logits against (B, 1, H, W) integer label maps."""
    return F.cross_entropy(logits.float(), masks[:, 0].long())


def linear_decay(step: int, steps: int, decay_from: float) -> float:
    """The learning-rate factor at ``step``: 1 until ``decay_from * steps``, then linear to 0 at ``steps``
    (the reference's ``1 - max(0, epoch - n_epochs) / (n_epochs_decay + 1)``, per step)."""
    constant = round(decay_from * steps)
    decaying = steps - constant
    if step < constant or decaying <= 0:
        return 1.0
    return max(0.0, 1.0 - (step - constant + 1) / (decaying + 1))


class CycleGAN:
    """Unpaired A <-> B translation with cycle consistency.

    Args:
        generator_ab, generator_ba: images in [-1, 1] -> images in [-1, 1].
        discriminator_a, discriminator_b: images -> raw patch logits.
        judge: segmenter of real B slices (the hallucination score's), or None.
        structure_segmenter: S_B, segmenter of the structure-consistency term A -> B, or None (term off).
        structure_segmenter_a: S_A, segmenter of its B -> A half, or None (that half off).
        loss: "least-squares" (published) or "non-saturating".
        lr, betas: Adam settings of every network.
        steps: the run's length (for the learning-rate schedule).
        decay_from: fraction of ``steps`` after which the learning rate decays linearly to zero.
        lambda_cycle, lambda_identity, lambda_structure: loss weights (identity relative to cycle).
        pool_size: images in each discriminator's history pool.
        precision: the mixed-precision policy.
        seed: seed of the pools' coin flips.
        device: where the networks and batches live.
    """

    real_batches_per_step = 1

    def __init__(
        self,
        generator_ab: nn.Module,
        generator_ba: nn.Module,
        discriminator_a: nn.Module,
        discriminator_b: nn.Module,
        *,
        judge: nn.Module | None = None,
        structure_segmenter: nn.Module | None = None,
        structure_segmenter_a: nn.Module | None = None,
        loss: str = "least-squares",
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        steps: int = 1,
        decay_from: float = 0.5,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        lambda_structure: float = 1.0,
        pool_size: int = 50,
        precision: Precision,
        seed: int,
        device: torch.device,
    ) -> None:
        self.loss = AdversarialLoss(loss)
        if self.loss not in (AdversarialLoss.LEAST_SQUARES, AdversarialLoss.NON_SATURATING):
            raise ValueError(f"CycleGAN takes the 'least-squares' or 'non-saturating' loss, not {loss!r}")
        self.device = device
        self.precision = precision
        self.generator_ab = generator_ab.to(device).train()
        self.generator_ba = generator_ba.to(device).train()
        self.discriminator_a = discriminator_a.to(device).train()
        self.discriminator_b = discriminator_b.to(device).train()
        self.generators = nn.ModuleList([self.generator_ab, self.generator_ba])
        self.discriminators = nn.ModuleList([self.discriminator_a, self.discriminator_b])
        self.judge = judge.to(device).train() if judge is not None else None
        self.structure_segmenter = structure_segmenter.to(device).train() if structure_segmenter is not None else None
        self.structure_segmenter_a = structure_segmenter_a.to(device).train() if structure_segmenter_a is not None else None
        self.lr = lr
        self.steps = steps
        self.decay_from = decay_from
        self.lambda_cycle = lambda_cycle
        self.lambda_identity = lambda_identity
        self.lambda_structure = lambda_structure
        # name -> (network, optimiser, loss scaler); one Adam for both generators and one for both
        # discriminators, as published.
        self.optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]] = {}
        for name, network in (("generators", self.generators), ("discriminators", self.discriminators),
                              ("judge", self.judge), ("structure_segmenter", self.structure_segmenter),
                              ("structure_segmenter_a", self.structure_segmenter_a)):
            if network is not None:
                self.optimizers[name] = (network, adam(network, lr, betas, device), precision.grad_scaler())
        self.pool_a = ImagePool(pool_size, seed)
        self.pool_b = ImagePool(pool_size, seed + 1)
        self.step = 0

    @staticmethod
    def optimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def _step(self, name: str, loss: torch.Tensor) -> None:
        _, optimizer, scaler = self.optimizers[name]
        self.optimise(loss, optimizer, scaler)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step on an unpaired batch (:class:`~augmentor.training.unpaired.DomainKey`); device-tensor metrics."""
        factor = linear_decay(self.step, self.steps, self.decay_from)
        for _, optimizer, _ in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = self.lr * factor
        real_a, real_b = batch[DomainKey.IMAGE_A.value], batch[DomainKey.IMAGE_B.value]
        mask_a, mask_b = batch[DomainKey.MASK_A.value], batch[DomainKey.MASK_B.value]
        g_ab, g_ba, d_a, d_b = self.generator_ab, self.generator_ba, self.discriminator_a, self.discriminator_b
        metrics: dict[str, torch.Tensor] = {}

        # 1. generators, discriminators (and the structure segmenters) frozen
        segmenters = [network for network in (self.structure_segmenter, self.structure_segmenter_a) if network is not None]
        frozen = [self.discriminators, *segmenters]
        for network in frozen:
            network.requires_grad_(False)
        with self.precision.autocast():
            fake_b = g_ab(real_a)
            fake_a = g_ba(real_b)
            adversarial = generator_loss(d_b(fake_b), self.loss) + generator_loss(d_a(fake_a), self.loss)
            cycle = F.l1_loss(g_ba(fake_b).float(), real_a) + F.l1_loss(g_ab(fake_a).float(), real_b)
            loss_g = adversarial + self.lambda_cycle * cycle
            if self.lambda_identity > 0:
                identity = F.l1_loss(g_ab(real_b).float(), real_b) + F.l1_loss(g_ba(real_a).float(), real_a)
                loss_g = loss_g + self.lambda_cycle * self.lambda_identity * identity
                metrics["identity_l1"] = identity.detach()
            if self.structure_segmenter is not None:
                shape = segmentation_loss(self.structure_segmenter(fake_b), mask_a)
                loss_g = loss_g + self.lambda_structure * shape
                metrics["shape_consistency"] = shape.detach()
            if self.structure_segmenter_a is not None:
                shape_ba = segmentation_loss(self.structure_segmenter_a(fake_a), mask_b)
                loss_g = loss_g + self.lambda_structure * shape_ba
                metrics["shape_consistency_b_to_a"] = shape_ba.detach()
        self._step("generators", loss_g)
        for network in frozen:
            network.requires_grad_(True)

        # 2. discriminators on real images and pooled fakes
        pooled_a, pooled_b = self.pool_a.query(fake_a), self.pool_b.query(fake_b)
        with self.precision.autocast():
            loss_d_a = discriminator_loss(d_a(real_a), d_a(pooled_a.to(real_a.dtype)), self.loss)
            loss_d_b = discriminator_loss(d_b(real_b), d_b(pooled_b.to(real_b.dtype)), self.loss)
        self._step("discriminators", loss_d_a + loss_d_b)

        # 3. the structure segmenter on real B (its labels) and on translations (the phantom's labels)
        if self.structure_segmenter is not None:
            with self.precision.autocast():
                loss_s = segmentation_loss(self.structure_segmenter(real_b), mask_b) + segmentation_loss(
                    self.structure_segmenter(fake_b.detach()), mask_a
                )
            self._step("structure_segmenter", loss_s)
            metrics["structure_segmenter_loss"] = loss_s.detach()
        # 3'. ... and S_A on phantoms (their labels) and on translations B -> A (the CT slices' labels)
        if self.structure_segmenter_a is not None:
            with self.precision.autocast():
                loss_s_a = segmentation_loss(self.structure_segmenter_a(real_a), mask_a) + segmentation_loss(
                    self.structure_segmenter_a(fake_a.detach()), mask_b
                )
            self._step("structure_segmenter_a", loss_s_a)
            metrics["structure_segmenter_a_loss"] = loss_s_a.detach()
        # 4. the judge on real B only
        if self.judge is not None:
            with self.precision.autocast():
                loss_j = segmentation_loss(self.judge(real_b), mask_b)
            self._step("judge", loss_j)
            metrics["judge_loss"] = loss_j.detach()

        self.step += 1
        return {
            "generator_loss": loss_g.detach(),
            "discriminator_a_loss": loss_d_a.detach(),
            "discriminator_b_loss": loss_d_b.detach(),
            "adversarial": adversarial.detach(),
            "cycle_l1": cycle.detach(),
            **metrics,
            "lr_factor": torch.tensor(factor, device=self.device),
        }

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One update; returns its metrics as floats (synchronises with the device)."""
        metrics = self.update(batch)
        return {key: float(value) for key, value in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "networks": {name: network.state_dict() for name, (network, _, _) in self.optimizers.items()},
            "optimizers": {name: optimizer.state_dict() for name, (_, optimizer, _) in self.optimizers.items()},
            "scalers": {name: scaler.state_dict() for name, (_, _, scaler) in self.optimizers.items()},
            "pool_a": self.pool_a.state_dict(),
            "pool_b": self.pool_b.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        for name, (network, optimizer, scaler) in self.optimizers.items():
            network.load_state_dict(state["networks"][name])
            optimizer.load_state_dict(state["optimizers"][name])
            if state["scalers"][name]:
                scaler.load_state_dict(state["scalers"][name])
        self.pool_a.load_state_dict(state["pool_a"], self.device)
        self.pool_b.load_state_dict(state["pool_b"], self.device)
