"""One frozen spec per job: what to train and how. Its hash is the job's identity.

The canonical form is sorted JSON of the fields, with fields that are None left out so that a field
added later with a None default does not change the identity of jobs enqueued before it existed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.protocol.paper import PAPER_BATCH_SIZE, PAPER_LAM, PAPER_MODEL, PAPER_TAU, SCL_REDUCTIONS

LOSSES = ("ce", "ce+scl")
BATCHINGS = ("fixed", "reshuffle", "length")  # how training batches are formed: harness.training.batching
SAMPLINGS = ("uniform", "stratified")  # how the N training examples are drawn: harness.protocol.data
NOISE_MODES = ("augment", "replace")  # noisy copies added to the originals, or replacing them
DEFAULT_MODEL = PAPER_MODEL  # what a job fine-tunes unless told otherwise
SMALL_MODEL = "sentence-transformers/paraphrase-MiniLM-L3-v2"  # runs on a CPU in minutes
HASH_CHARS = 16  # hex characters of sha256 kept as the job id
# Back-translation temperature T: 0 (clean) or 0 < T ≤ MAX_NOISE. The paper ran 0.3–0.9; up to 1.5
# the pt<->en round trip still gives sentences (SST-2, 16 sentences of ~91 characters: mean edit
# distance 23 at T = 0.9, 29 at 1.2, 40 at 1.5), at 2.0 half-broken ones (70: "graceful and intried
# with eache a griege, as it was a century and a half ago" for "satisfyingly odd and intriguing a
# tale as it was a century and a half ago"), beyond it word salad ("bit last lifer avoids
# byschbion" at 3.0), which no longer carries its label. Our noise extension (grid noise-replace)
# needs 2.0: up to 1.5, with the texts replaced, CE lost under 2 points (pilot, 3 seeds, N = 100;
# SST-2 4.6 points at 2.0, harness.protocol.grids.HARSH_NOISES).
MAX_NOISE = 2.0
# SCL temperature τ ≥ MIN_TAU. The SCL term of an anchor is at most 2/τ + ln(B − 1) (cosine
# similarities lie in [−1, 1]), its gradient of order 1/τ: at 0.01 a few hundred, while τ = 1e-30
# stored a training loss of 1.1e29 (and 1/τ² overflows Adam's float32 second moment below ~1e-19).
# Below 0.01 the softmax is a hard max anyway; the paper's τ are 0.1–0.9.
MIN_TAU = 0.01
MAX_INT = 2**31 - 1  # the database's integer columns (PostgreSQL INTEGER) hold no more
INT_FIELDS = {"seed": "--seeds", "n": "--n", "batch_size": "--batch-size", "epochs": "--epochs",
              "max_length": "--max-length", "val_size": "val size", "train_seed": "train seed",
              "per_class": "per class", "steps": "--steps", "eval_every": "--eval-every"}


@dataclass(frozen=True)
class JobSpec:
    task: str
    seed: int  # which random training sample; also the training seed unless train_seed is set
    loss: str = "ce"
    n: int | None = None  # labelled training examples; None = the full training set
    noise: float = 0.0  # back-translation temperature T; 0 = clean data
    noise_mode: str | None = None  # augment | replace; only meaningful when noise > 0
    noise_backend: str | None = None  # translator backend; only meaningful when noise > 0
    lam: float | None = None  # λ in (1 − λ)·CE + λ·SCL; 0 for ce, PAPER_LAM for ce+scl if unset
    tau: float | None = None  # SCL temperature; None for ce
    scl_reduction: str | None = None  # mean | sum over anchors; None for ce
    model: str = DEFAULT_MODEL
    lr: float = 1e-5
    batch_size: int = PAPER_BATCH_SIZE
    epochs: int = 10
    max_length: int = 128
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    val_size: int = 500  # at most this many validation examples: min(val_size, what the task spares; SST-2 436)
    train_seed: int | None = None
    init_from: str | None = None  # job id whose fine-tuned model this job starts from (transfer)
    per_class: int | None = None  # sample n as this many examples per class (transfer: 20)
    batching: str = "fixed"  # fixed (fairseq, the paper's code) | reshuffle (Trainer) | length
    sampling: str = "uniform"  # uniform ("N examples sampled") | stratified (equal per class)
    # Protocol v2: a budget in optimizer steps instead of epochs, validating every eval_every
    # steps and at the last one (None: the epoch protocol, validating after every epoch).
    steps: int | None = None
    eval_every: int | None = None

    # ---- identity -------------------------------------------------------------------------
    def canonical(self) -> dict:
        return {k: v for k, v in sorted(dataclasses.asdict(self).items()) if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    @property
    def job_id(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:HASH_CHARS]

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HarnessError(f"job spec has unknown fields {sorted(unknown)}: upgrade the harness")
        return cls(**data)

    @property
    def effective_train_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def uses_scl(self) -> bool:
        return self.loss == "ce+scl"

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def make(cls, **fields) -> JobSpec:
        """Build a normalised, validated spec, so that equal experiments always hash equal: the
        canonical task name (SST-2, sst-2 and sst2 are one task), CE jobs carry no SCL settings,
        CE+SCL jobs the paper's λ and τ unless given, clean jobs no noise settings, a train_seed
        equal to the seed is no train_seed, and per-class samples are stratified."""
        spec = cls(**fields)
        spec.validate_fields()
        from harness.protocol.tasks import get_task

        changes: dict = {"task": get_task(spec.task).name}
        if spec.loss == "ce":
            changes.update(lam=0.0, tau=None, scl_reduction=None)
        else:
            changes.update(scl_reduction=spec.scl_reduction or "mean",
                           lam=PAPER_LAM if spec.lam is None else spec.lam,
                           tau=PAPER_TAU if spec.tau is None else spec.tau)
        if spec.train_seed == spec.seed:
            changes.update(train_seed=None)
        if spec.per_class is not None:
            changes.update(sampling="stratified")
        if spec.steps is not None:  # the budget is in steps: epochs are whatever the steps take
            changes.update(epochs=1, eval_every=spec.eval_every or spec.steps)
        if spec.noise == 0:
            changes.update(noise_mode=None, noise_backend=None)
        else:
            changes.update(noise_mode=spec.noise_mode or "augment",
                           noise_backend=spec.noise_backend or "firefox-pt")
        for k in ("lam", "noise", "lr", "warmup_ratio", "weight_decay"):
            v = changes.get(k, getattr(spec, k))
            changes[k] = float(v)
        if changes.get("tau") is not None:
            changes["tau"] = float(changes["tau"])
        return dataclasses.replace(spec, **changes)

    def validate_fields(self) -> None:
        """Checks that need no data; `harness.protocol.data.check_spec_against_data` checks N etc."""
        from harness.protocol.tasks import get_task

        get_task(self.task)
        for name, option in INT_FIELDS.items():
            v = getattr(self, name)
            if isinstance(v, int) and abs(v) > MAX_INT:
                raise HarnessError(f"{option} {v} is too large: the database stores whole numbers "
                                   f"up to {MAX_INT}")
        if self.loss not in LOSSES:
            raise HarnessError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.lam is not None:
            _finite(self.lam, "λ (--lam)")
            if not 0.0 <= self.lam <= 1.0:
                raise HarnessError(f"λ (--lam) must lie in [0, 1], got {self.lam}")
        if self.batching not in BATCHINGS:
            raise HarnessError(f"unknown batching {self.batching!r}; choose one of {', '.join(BATCHINGS)}")
        if self.sampling not in SAMPLINGS:
            raise HarnessError(f"unknown sampling {self.sampling!r}; choose one of {', '.join(SAMPLINGS)}")
        if self.tau is not None:
            _finite(self.tau, "τ (--tau)")
            if self.tau < MIN_TAU:
                raise HarnessError(f"τ (--tau) must be ≥ {MIN_TAU} (the paper's are 0.1–0.9; a smaller "
                                   f"τ makes the SCL term and its gradient of order 1/τ), got {self.tau:g}")
        if self.scl_reduction is not None and self.scl_reduction not in SCL_REDUCTIONS:
            raise HarnessError(f"unknown SCL reduction {self.scl_reduction!r}; "
                               f"choose one of {', '.join(SCL_REDUCTIONS)}")
        if self.n is not None and self.n <= 0:
            raise HarnessError(f"N (--n) must be a positive number of examples, got {self.n}")
        _finite(self.noise, "noise temperature (--noise)")
        if not 0 <= self.noise <= MAX_NOISE:
            raise HarnessError(f"noise temperature (--noise) must be 0 (clean) or 0 < T ≤ {MAX_NOISE} "
                               f"(the paper's are 0.3–0.9; above {MAX_NOISE} back-translation samples "
                               f"word salad, not paraphrases), got {self.noise:g}")
        if self.noise_mode is not None and self.noise_mode not in NOISE_MODES:
            raise HarnessError(f"unknown noise mode {self.noise_mode!r}; "
                               f"choose one of {', '.join(NOISE_MODES)}")
        _finite(self.lr, "learning rate (--lr)")
        if self.lr <= 0:
            raise HarnessError(f"learning rate (--lr) must be > 0, got {self.lr}")
        for name, v in (("batch size (--batch-size)", self.batch_size), ("epochs (--epochs)", self.epochs),
                        ("max length (--max-length)", self.max_length), ("val size", self.val_size)):
            if not isinstance(v, int) or v <= 0:
                raise HarnessError(f"{name} must be a positive integer, got {v}")
        if self.uses_scl and self.batch_size < 2:
            raise HarnessError("CE+SCL needs a batch of at least 2 examples (--batch-size)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise HarnessError(f"warm-up ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.seed < 0:
            raise HarnessError(f"seeds must be ≥ 0, got {self.seed}")
        if self.per_class is not None and self.per_class <= 0:
            raise HarnessError(f"examples per class must be positive, got {self.per_class}")
        for name, v in (("--steps", self.steps), ("--eval-every", self.eval_every)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise HarnessError(f"{name} must be a positive whole number of optimizer steps, got {v!r}")
        if self.eval_every is not None and self.steps is None:
            raise HarnessError("--eval-every needs a budget in steps (--steps): epoch-budget jobs "
                               "validate after every epoch")
        if self.eval_every is not None and self.steps is not None and self.eval_every > self.steps:
            raise HarnessError(f"--eval-every {self.eval_every} is more than the budget of "
                               f"{self.steps} steps")


def _finite(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HarnessError(f"{name} must be a finite number, got {value!r}")
