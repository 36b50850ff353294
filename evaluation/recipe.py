"""The ``evaluate`` recipe kind (``augment evaluate``): frozen, validated dataclasses. Imports no torch.

A recipe file::

    kind = "evaluate"
    name = "evaluate-liver"

    [data]                        # real data: files, or a simulated cohort built (and reused) on demand
    cohort = "liver-lesions"      # or: train = ["train.h5"], test = ["test.h5"]
    cohort_seed = 0
    validation_fraction = 0.2     # of the train *patients*: early stopping and model selection

    [synthetic]                   # synthetic files, or a model the arms' samples are generated from
    model = "frid-adar-liver"

    [arms]                        # (a) real (b) classic (c) classic+synthetic sweep (o) oracle (d) pretrain (e) TSTR
    classification = ["real", "classic", "classic+synthetic", "classic+oracle", "pretrain-finetune", "synthetic-only"]
    sweep = [1, 3, 10]            # synthetic samples per real sample, per class
    segmentation = ["real", "classic", "classic+synthetic"]

    [train]
    seeds = [0, 1, 2, 3, 4]
    epochs = 150                  # budget in epochs of each arm's own training set ...
    min_steps = 400               # ... and at least this many steps; early stopping usually ends sooner

Values left out take the defaults below. Relative paths are relative to the working directory.
The resolved recipe is stored in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from augmentor.recipes import register_recipe_kind

# The registries (evaluation.models.CLASSIFIERS, evaluation.arms.ArmKind) hold these names too; a test
# keeps them in step.
ClassifierName = Literal[
    "frid-adar-cnn", "densenet121", "densenet169", "resnet10", "resnet18", "resnet34", "resnet50", "efficientnet-b0"
]
ArmName = Literal[
    "real", "classic", "classic+synthetic", "classic+oracle", "pretrain-finetune", "synthetic-only", "classic+translated", "classic+phantom"
]
CohortName = Literal["", "liver-lesions", "lung-nodules", "abdomen-ct"]


@dataclass(frozen=True)
class DataSection:
    """The real data: train and test files from disjoint patients, or a simulated cohort."""

    train: tuple[str, ...] = ()  # real train files (patients disjoint from test)
    test: tuple[str, ...] = ()  # real test files: touched once per trained network
    cohort: CohortName = ""  # build this simulated cohort instead of giving files
    cohort_seed: int = 0
    cohort_train_size: int = 0  # 0: the published count
    cohort_test_size: int = 0  # 0: the cohort's default
    cohort_dir: str = ""  # where the cohort is built and reused; "": inside the report folder
    validation_fraction: float = 0.2  # fraction of train patients held out for early stopping
    split_seed: int = 0
    # Mask labels the segmenter learns, by name (every other label is background); empty: every label of the files.
    structures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cohort and (self.train or self.test):
            raise ValueError("give data.cohort or data.train/data.test files, not both")
        if not self.cohort and not (self.train and self.test):
            raise ValueError("give real data: data.train and data.test files, or data.cohort (liver-lesions, lung-nodules)")
        if not 0.0 < self.validation_fraction <= 0.5:
            raise ValueError(f"validation_fraction must be in (0, 0.5], got {self.validation_fraction}")
        for name in ("cohort_seed", "cohort_train_size", "cohort_test_size", "split_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(set(self.structures)) != len(self.structures) or "background" in self.structures:
            raise ValueError(f"structures must be distinct mask label names other than background, got {list(self.structures)}")


@dataclass(frozen=True)
class SyntheticSection:
    """Synthetic data: files, or a model (zoo name or directory) that generates what the arms need."""

    files: tuple[str, ...] = ()
    model: str = ""
    seed: int = 0  # generation seed: sample i of class c depends only on (model, c, seed, i)
    pool: str = ""  # where generated samples are written and reused; "": inside the report folder
    allow_unverified: bool = False  # accept synthetic data whose provenance cannot rule out test patients
    # Accept a generator that was trained on (some of) the validation patients that early-stop the arms.
    # The synthetic arms then select their checkpoints on patients the generator saw, an advantage the
    # real arms lack; the report says so in red.
    allow_generator_saw_validation: bool = False
    batch_size: int = 1024
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.files and self.model:
            raise ValueError("give synthetic.files or synthetic.model, not both")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class PhantomSection:
    """Phantoms (domain A) for the segmentation arms ``classic+phantom`` (as they are) and ``classic+translated``
    (translated into the CT domain by each CycleGAN of ``translation_models``, with
    :func:`augmentor.translation.translate.translate`). Both are built once and reused from ``dir``."""

    file: str = ""  # a phantom file (augment phantom, or a user's XCAT slices); "": built with augment phantom's simulator
    n_patients: int = 40  # phantom patients built (when file is "")
    slices_per_patient: int = 8
    seed: int = 0  # seed of the built phantoms
    translation_models: tuple[str, ...] = ()  # CycleGAN translation models (zoo names or directories), one arm set each
    translation_seed: int = 0  # seed of the translation's steganography probe (the translated images do not depend on it)
    dir: str = ""  # where phantoms and translations are written and reused; "": inside the report folder
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("n_patients", "slices_per_patient", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed", "translation_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        labels = [translation_label(model) for model in self.translation_models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"translation_models must have distinct names, got {list(self.translation_models)}")


def translation_label(model: str) -> str:
    """The name a translation model's arms carry: its zoo name, or its directory's name."""
    return model.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ArmsSection:
    """Which arms run. Every arm trains with the same splits, seeds and step budget."""

    classification: tuple[ArmName, ...] = ("real", "classic", "classic+synthetic", "pretrain-finetune", "synthetic-only")
    sweep: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)  # synthetic per real sample, per class (arm c)
    pretrain_samples: int = 0  # synthetic samples for pretraining, split evenly by class; 0: max(sweep) x real
    synthetic_only_ratio: float = 0.0  # synthetic per real sample for TSTR; 0: max(sweep)
    segmentation: tuple[ArmName, ...] = ()  # empty: no segmentation arms
    segmentation_sweep: tuple[float, ...] = (1.0,)
    # The oracle arms (classic+oracle): real lesions of new virtual patients, simulated with this cohort
    # seed (never the reported or the tuning cohort's), at these ratios (empty: the synthetic sweep's).
    oracle_seed: int = 1000
    oracle_sweep: tuple[float, ...] = ()
    # The reference row: logistic regression on a few intensity, size and shape features of the lesion.
    reference: bool = True

    def __post_init__(self) -> None:
        for name in ("classification", "segmentation"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists an arm twice: {list(values)}")
        if not self.classification and not self.segmentation:
            raise ValueError("no arms: set arms.classification and/or arms.segmentation")
        for name in ("sweep", "segmentation_sweep", "oracle_sweep"):
            values = getattr(self, name)
            if (name != "oracle_sweep" and not values) or any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct ratios > 0, got {list(values)}")
        if self.oracle_seed < 0:
            raise ValueError(f"oracle_seed must be >= 0, got {self.oracle_seed}")
        if self.pretrain_samples < 0:
            raise ValueError(f"pretrain_samples must be >= 0, got {self.pretrain_samples}")
        if self.synthetic_only_ratio < 0:
            raise ValueError(f"synthetic_only_ratio must be >= 0, got {self.synthetic_only_ratio}")


@dataclass(frozen=True)
class AugmentationSection:
    """Classic augmentation (MONAI dictionary transforms on image and mask together)."""

    flip: bool = True  # random left-right and up-down flips (lesion ROIs have no preferred orientation)
    rotate_degrees: float = 15.0
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    affine_probability: float = 0.8
    elastic_probability: float = 0.2
    elastic_magnitude: float = 1.0  # displacement (pixels) of the coarse grid, up to this
    intensity_shift: float = 0.05  # in normalised units ([-1, 1] window)
    intensity_scale: float = 0.05

    def __post_init__(self) -> None:
        for name in ("affine_probability", "elastic_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("rotate_degrees", "scale", "elastic_magnitude", "intensity_shift", "intensity_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ClassifierSection:
    """The downstream classifier: Frid-Adar et al.'s small CNN, or a MONAI network by name."""

    network: ClassifierName = "frid-adar-cnn"
    channels: tuple[int, ...] = (32, 64, 128)  # frid-adar-cnn: filters of its three conv + pool blocks
    kernel_size: int = 5  # frid-adar-cnn
    dense_units: int = 512  # frid-adar-cnn: the hidden dense layer (also the fidelity feature size)
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be positive, got {list(self.channels)}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.dense_units < 1:
            raise ValueError(f"dense_units must be >= 1, got {self.dense_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class SegmenterSection:
    """The downstream segmenter: a MONAI UNet."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    residual_units: int = 1

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be >= 2 positive widths, got {list(self.channels)}")
        if self.residual_units < 0:
            raise ValueError(f"residual_units must be >= 0, got {self.residual_units}")


@dataclass(frozen=True)
class TrainSection:
    """The downstream training loop (the same for every arm): every stage trains to convergence.

    A stage's budget is ``epochs`` passes over *its own* training set (at least ``min_steps`` steps);
    early stopping on the smoothed validation loss (``patience`` checks without improvement, after
    ``lr_patience`` checks the learning rate is multiplied by ``lr_factor``) normally ends it sooner.
    A stage the budget ended is reported as budget-bound.
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    epochs: float = 150.0  # training and fine-tuning stages
    min_steps: int = 400
    pretrain_epochs: float = 30.0  # synthetic pretraining (and synthetic-only training)
    pretrain_min_steps: int = 400
    segmentation_epochs: float = 100.0
    segmentation_min_steps: int = 300
    eval_every: int = 20  # steps between validation checks
    patience: int = 10  # validation checks without improvement before stopping
    lr_patience: int = 5  # checks without improvement before the learning rate drops
    lr_factor: float = 0.3
    smoothing: float = 0.6  # moving average of the validation loss: weight of the past
    criterion: Literal["brier", "loss"] = "brier"  # what early stopping watches (classification; segmentation: its loss)
    warmup_steps: int = 0  # checks before this step neither count as best nor use up patience (0: all count)
    workers: int = 1  # processes training (arm, seed) jobs in parallel; 1: in this process
    cache: str = "cache/evaluate"  # finished jobs, reused by an identical job; "": no cache

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        for name in ("batch_size", "min_steps", "pretrain_min_steps", "segmentation_min_steps", "eval_every", "patience", "lr_patience", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("epochs", "pretrain_epochs", "segmentation_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.learning_rate < 1.0:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.lr_factor <= 1.0:
            raise ValueError(f"lr_factor must be in (0, 1], got {self.lr_factor}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True)
class FidelitySection:
    """Fréchet distance, KID and precision/recall/density/coverage, per class."""

    enabled: bool = True
    max_samples: int = 1000  # per class and set (the larger sets are subsampled, seeded)
    kid_subsets: int = 50
    kid_subset_size: int = 100  # capped at the smallest set
    nearest_k: int = 5  # k of the k-NN balls (Naeem et al. 2020 use 5)
    seed: int = 0  # feature network and subsampling

    def __post_init__(self) -> None:
        for name in ("max_samples", "kid_subsets", "kid_subset_size", "nearest_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class MemorisationSection:
    """Nearest-neighbour audit of synthetic samples against the GAN's training set."""

    enabled: bool = True
    percentile: float = 1.0  # of real-test-to-train distances: closer synthetic samples are flagged
    closest_pairs: int = 8
    max_synthetic: int = 0  # audit at most this many synthetic samples (seeded subsample); 0: all

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile < 50.0:
            raise ValueError(f"percentile must be in (0, 50), got {self.percentile}")
        if self.closest_pairs < 0 or self.max_synthetic < 0:
            raise ValueError("closest_pairs and max_synthetic must be >= 0")


@dataclass(frozen=True)
class StatisticsSection:
    """Confidence intervals and paired tests (hierarchical bootstrap: seeds and test patients)."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # Paired differences between named arms, [arm, baseline] (arm minus baseline, by seed and test sample),
    # besides every arm against real and against classic: e.g. one synthetic source against another at the
    # same ratio. Names as in the report ("classic+translated(cyclegan-phantom-ct) x3"); `--plan` lists them.
    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.resamples < 10:
            raise ValueError(f"resamples must be >= 10, got {self.resamples}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        for arm, baseline in self.pairs:
            if arm == baseline:
                raise ValueError(f"pairs: {arm!r} against itself")
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError("pairs: a pair is given twice")


@dataclass(frozen=True)
class ReportSection:
    """What the HTML page shows."""

    images_per_class: int = 8  # real vs synthetic grid

    def __post_init__(self) -> None:
        if self.images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {self.images_per_class}")


@register_recipe_kind("evaluate")
@dataclass(frozen=True)
class EvaluateRecipe:
    """A recipe for ``augment evaluate``."""

    kind: Literal["evaluate"] = "evaluate"
    name: str = ""
    description: str = ""
    data: DataSection = field(default_factory=lambda: DataSection(cohort="liver-lesions"))
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    arms: ArmsSection = field(default_factory=ArmsSection)
    augmentation: AugmentationSection = field(default_factory=AugmentationSection)
    classifier: ClassifierSection = field(default_factory=ClassifierSection)
    segmenter: SegmenterSection = field(default_factory=SegmenterSection)
    train: TrainSection = field(default_factory=TrainSection)
    fidelity: FidelitySection = field(default_factory=FidelitySection)
    memorisation: MemorisationSection = field(default_factory=MemorisationSection)
    phantoms: PhantomSection = field(default_factory=PhantomSection)
    statistics: StatisticsSection = field(default_factory=StatisticsSection)
    report: ReportSection = field(default_factory=ReportSection)

    @property
    def needs_synthetic(self) -> bool:
        """Whether an arm trains on synthetic data (fidelity and memorisation run whenever there is some)."""
        uses = {"classic+synthetic", "pretrain-finetune", "synthetic-only"}
        return bool(uses & set(self.arms.classification + self.arms.segmentation))

    @property
    def needs_oracle(self) -> bool:
        """Whether an arm trains on oracle lesions (new virtual patients: simulated cohorts only)."""
        return bool(self.data.cohort) and "classic+oracle" in set(self.arms.classification + self.arms.segmentation)

    @property
    def needs_phantoms(self) -> bool:
        """Whether a segmentation arm trains on phantoms (as they are, or translated)."""
        return bool({"classic+phantom", "classic+translated"} & set(self.arms.segmentation))

    def __post_init__(self) -> None:
        if "classic+translated" in self.arms.segmentation and not self.phantoms.translation_models:
            raise ValueError("arm classic+translated needs phantoms.translation_models (CycleGAN models, zoo names or directories)")
        misplaced = {"classic+phantom", "classic+translated"} & set(self.arms.classification)
        if misplaced:
            raise ValueError(f"arms {sorted(misplaced)} are segmentation arms (phantoms carry organ labels, not lesion classes)")
        # Real data (data.train / data.test) have no new patients to draw: their oracle arms are left out.
        if self.needs_oracle and self.data.cohort and self.arms.oracle_seed == self.data.cohort_seed:
            raise ValueError(f"arms.oracle_seed {self.arms.oracle_seed} equals data.cohort_seed: the oracle must be new patients")
