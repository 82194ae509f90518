"""Every user setting once: its name, kind, range, help, and its default for each command that takes it.

The study's configuration (minigrad.study.config: defaults, --quick, the checks of TOML and options), the click
options of `minigrad bench` and `minigrad train`, train's checks and the experiments' checks are all built from
SETTINGS, so a default, a range or a vocabulary is written here and nowhere else. A test holds every command's
--help to this table.
"""
from dataclasses import dataclass, field

from minigrad.machine import checks

# ------------------------------------------------------------------------------------------------ vocabularies
ACTIVATIONS = ("relu", "tanh", "gelu")
LOSSES = ("cross_entropy", "mse")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SAMPLERS = ("shuffle", "replacement", "stratified")
# CENSORED: a tuning trial stopped early at a step count that already makes it slower than its batch size's best
# cell (minigrad.study.plan.censor_bound); every statistic reads it as "more than that many steps"
STATUSES = ("COMPLETE", "INCOMPLETE", "DIVERGED", "CENSORED")
BETA2_RULES = ("fixed", "halflife")
COMPLETE, INCOMPLETE, DIVERGED, CENSORED = STATUSES
SWITCHES = ("on", "off")

_SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Setting:
    """kind: 'int', 'float', 'ints', 'floats', 'choice', 'str' or 'table'; lo/hi the range (None: unbounded),
    lo_open/hi_open its open ends; defaults: {command: value} (a command not listed does not take it); quick:
    `bench --quick`'s value; option: the command-line flag where it is not --name-with-dashes."""

    name: str
    kind: str
    help: str
    defaults: dict = field(default_factory=dict)
    lo: float = None
    hi: float = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = None
    unique: bool = False
    nullable: bool = False      # None is a value (e.g. target: chosen by the study)
    quick: object = None
    option: str = None
    what: str = None            # what a 'str' or 'table' value must be, for the message
    empty: bool = False         # an empty list is a value (milestones: none)

    @property
    def flag(self):
        return self.option or "--" + self.name.replace("_", "-")

    def check(self, value, label=None):
        """The value, checked (types too: TOML's "3" is not a count); ValueError naming the setting otherwise."""
        label = label or self.name
        if value is None and self.nullable:
            return None
        if self.kind in ("int", "float"):
            return checks.number(label, value, self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open,
                                 integer=self.kind == "int")
        if self.kind in ("ints", "floats"):
            if self.empty and isinstance(value, (list, tuple)) and not value:
                return []
            out = checks.numbers(label, value, self.lo, self.hi, lo_open=self.lo_open, integer=self.kind == "ints",
                                 unique=self.unique)
            if self.hi_open:
                for v in out:
                    checks.number(label, v, self.lo, self.hi, lo_open=self.lo_open, hi_open=True)
            return out
        if self.kind == "choice":
            return checks.choice(label, value, self.choices)
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{label} must be {self.what or 'text'}, got {value!r}")
            return value
        if self.kind == "table":
            if not isinstance(value, dict):
                raise ValueError(f"{label} must be {self.what or 'a table of options'}, got {value!r}")
            return value
        raise AssertionError(self.kind)

    def shown(self, value):
        """A value as the command line writes it: lists comma-separated, tables KEY=VALUE,..."""
        if isinstance(value, dict):
            return table_text(value)
        if isinstance(value, (list, tuple)):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _table_value(text):
    """One VALUE of KEY=VALUE as TOML would hold it: an integer, a number, true / false, else the text."""
    if text in ("true", "false"):
        return text == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_table(text, label="--data-options"):
    """'n_train=2000,label_noise=0.1' -> {'n_train': 2000, 'label_noise': 0.1}; ValueError naming what is wrong."""
    out = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        key, eq, value = (x.strip() for x in item.partition("="))
        if not eq or not key or not value:
            raise ValueError(f"{label} takes KEY=VALUE,... (e.g. n_train=2000,n_test=500), got {item!r:.60}")
        if key in out:
            raise ValueError(f"{label} gives {key} twice; give it once")
        out[key] = _table_value(value)
    return out


def table_item(key, value):
    """'KEY=VALUE' that parse_table reads back as exactly (key, value), or None where it cannot (a comma in a
    text, a value of another type)."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value) if isinstance(value, float) \
        else str(value)
    if any(c in f"{key}{text}" for c in ",=") or not str(key).strip() or str(key) != str(key).strip():
        return None
    back = _table_value(text)
    return f"{key}={text}" if type(back) is type(value) and back == value else None


def table_text(table):
    """A table as the command line writes it (see parse_table); ValueError for an entry it cannot write."""
    items = [table_item(k, v) for k, v in table.items()]
    if None in items:
        raise ValueError(f"cannot write {dict(table)!r:.80} as KEY=VALUE,...")
    return ",".join(items)


def _s(name, kind, help, **kw):
    return Setting(name, kind, help, **kw)


_TRAIN_AND_BENCH = ("bench", "train")
SETTINGS = {s.name: s for s in [
    # the model and the data
    _s("data", "str", "Dataset name (teacher, digits, mnist, fashion-mnist) or an .npz/.h5 path.",
       defaults={"bench": "teacher", "train": "teacher"}, what="a dataset name or a file path"),
    _s("data_options", "table", "Dataset options as KEY=VALUE,... (teacher: n_train, n_val, n_test, n_features, "
       "latent_dim, n_classes, label_noise, teacher_seed; mnist, fashion-mnist: n_val; digits and files: "
       "val_fraction, test_fraction).", defaults={"bench": {}, "train": {}}, what="a table of dataset options"),
    _s("hidden", "ints", "Hidden layer widths.", lo=1, hi=1_000_000, defaults={"bench": [64, 64], "train": [128, 128]}),
    _s("activation", "choice", "Activation of the hidden layers.", choices=ACTIVATIONS,
       defaults={"bench": "relu", "train": "relu"}),
    _s("loss", "choice", "Training loss.", choices=LOSSES, defaults={"bench": "cross_entropy", "train": "cross_entropy"}),
    _s("dtype", "choice", "Floating-point type of the model and data.", choices=DTYPES,
       defaults={"bench": "float32", "train": "float32"}),
    _s("optimizer", "choice", "Optimizer.", choices=OPTIMIZERS, defaults={"bench": "sgd", "train": "sgd"}),
    _s("momentum", "float", "Momentum (Adam: beta1).", lo=0, hi=1, hi_open=True,
       defaults={"bench": 0.9, "train": 0.9}),
    _s("beta2", "float", "Adam's beta2; with beta2_rule halflife, its value at the reference batch size.", lo=0, hi=1,
       lo_open=True, hi_open=True, defaults={"bench": 0.999, "train": 0.999}),
    _s("beta2_rule", "choice", "Adam's beta2 per B. fixed: beta2 at any batch size; halflife: beta2 = 0.5^(B / t_half), "
       "the same half-life in samples at every B (t_half from beta2_halflife, else that of beta2 at the reference "
       "batch size).", choices=BETA2_RULES, defaults={"bench": "fixed", "train": "fixed"}),
    _s("beta2_halflife", "float", "t_half in samples for beta2_rule halflife.", lo=0, hi=1e15, lo_open=True,
       nullable=True, defaults={"bench": None, "train": None}),
    _s("sampler", "choice", "How batches are drawn.", choices=SAMPLERS, defaults={"bench": "shuffle", "train": "shuffle"}),
    # the study's design
    _s("batch_sizes", "ints", "Batch sizes.", lo=1, unique=True,
       defaults={"bench": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]}, quick=[1, 4, 16, 64, 256, 1024]),
    _s("seeds", "int", "Seeds per (batch size, learning rate) cell.", lo=1, hi=1000, defaults={"bench": 5}, quick=2),
    _s("reference_batch_size", "int", "Batch size of the reference run (bench) or of --scale-lr's rule (train).",
       lo=1, defaults={"bench": 32, "train": 32}),
    _s("reference_lrs", "floats", "Learning rates of the reference run; they centre the per-B grids.", lo=0, hi=1e6,
       lo_open=True, defaults={"bench": [0.01, 0.03, 0.1, 0.3, 1.0]}, quick=[0.03, 0.1, 0.3], option="--lrs"),
    _s("reference_epochs", "float", "Epochs of the reference run.", lo=0, hi=1e5, lo_open=True,
       defaults={"bench": 30.0}, quick=10.0),
    _s("target", "float", "Validation error to reach (default: the reference run's best + target_margin).", lo=0,
       hi=1, lo_open=True, hi_open=True, nullable=True, defaults={"bench": None, "train": None}),
    _s("target_margin", "float", "Margin over the reference run's best error that makes the target.", lo=0, hi=1,
       hi_open=True, defaults={"bench": 0.02}),
    _s("lr_points", "int", "Learning rates per batch size.", lo=2, hi=100, defaults={"bench": 5}, quick=3),
    _s("lr_factor", "float", "Ratio between neighbouring learning rates.", lo=1, hi=1e3, lo_open=True,
       defaults={"bench": 2.0}),
    _s("max_widen", "int", "Rounds a grid whose best rate is on its edge may be widened.", lo=0, hi=100,
       defaults={"bench": 3}, quick=2),
    _s("budget_factor", "float", "A tuning trial may take this many times the reference run's steps "
       "(examples/B below B_ref).", lo=0, hi=1e4, lo_open=True, defaults={"bench": 3.0}, quick=2.5),
    _s("censor", "choice", "Stop a tuning trial once it has taken more steps than a bound that makes it slower than "
       "its batch size's best cell (status CENSORED); off: every trial runs to the target or its budget.",
       choices=SWITCHES, defaults={"bench": "on"}),
    _s("adaptive_budget", "int", "Extra trials the adaptive phase may spend where they change the answer.", lo=0,
       hi=100_000, defaults={"bench": 48}, quick=16),
    _s("adaptive_seeds", "int", "Seeds the adaptive phase adds per round at a batch size's best rate.", lo=1,
       hi=1000, defaults={"bench": 2}),
    _s("stable_fraction", "float", "The answer calls the tie set stable once it is the same in this fraction of "
       "resampled data sets.", lo=0, hi=1, lo_open=True, defaults={"bench": 0.8}),
    _s("regret_goal", "float", "The adaptive phase stops once following the pick costs at most this much more time "
       "than the fastest batch size in 90% of resamples.", lo=0, hi=10, defaults={"bench": 0.05}),
    _s("equal_epochs", "float", "Epochs of the equal-budget comparison.", lo=0, hi=1e5, lo_open=True,
       defaults={"bench": 5.0}, quick=3.0),
    _s("verify_seeds", "int", "Seeds per arm of the verify phase, which trains the recommended batch-size schedule "
       "against the pick at its tuned rate (0: off).", lo=0, hi=1000, defaults={"bench": 4}, quick=3),
    _s("eval_growth", "float", "Each evaluation comes this factor more steps after the last.", lo=1, hi=10,
       lo_open=True, defaults={"bench": 1.04}),
    # one training run
    _s("batch_size", "int", "Batch size.", lo=1, defaults={"train": 32}),
    _s("lr", "float", "Base learning rate.", lo=0, hi=1e6, lo_open=True, defaults={"train": 0.05}),
    _s("weight_decay", "float", "Weight decay (decoupled for Adam).", lo=0, hi=1e3, defaults={"train": 0.0}),
    _s("gamma", "float", "Step-decay factor.", lo=0, hi=1e3, lo_open=True, defaults={"train": 0.1}),
    _s("warmup_epochs", "float", "Linear learning-rate warm-up.", lo=0, hi=1e5, defaults={"train": 0.0}),
    _s("batch_growth", "int", "Multiply the batch size by this at each milestone (instead of decaying the rate).",
       lo=1, hi=1e6, defaults={"train": 1}),
    _s("batch_stages", "str", "A batch size and learning rate per stage, each stage after the first beginning when the "
       "validation error first reaches its level or at a step: B:LR,B:LR@err=E,... or B:LR,B:LR@step=N,... "
       "(replaces --batch-size, --lr and --batch-growth; the --lr-schedule's factor still applies).", nullable=True,
       defaults={"train": None}, what="stages B:LR,B:LR@err=E,..."),
    _s("milestones", "floats", "Epochs at which the step schedule decays the rate or grows the batch.", lo=0,
       hi=1e5, empty=True, defaults={"train": []}),
    _s("steps", "int", "Budget in optimizer steps.", lo=1, hi=1e12, nullable=True, defaults={"train": None}),
    _s("examples", "int", "Budget in training examples seen.", lo=1, hi=1e15, nullable=True, defaults={"train": None}),
    _s("epochs", "float", "Budget in epochs.", lo=0, hi=1e5, lo_open=True, nullable=True, defaults={"train": None}),
    _s("patience", "int", "Stop after this many evaluations without a better validation error.", lo=1,
       nullable=True, defaults={"train": None}),
    _s("n_val", "int", "Validation examples carved from the training set.", lo=1, nullable=True,
       defaults={"train": None}),
    _s("seed", "int", "Initialisation and batch order.", lo=0, hi=_SEED_MAX, defaults={"train": 0}),
    _s("data_seed", "int", "Which sample of the dataset and which split (fixed across --seed).", lo=0, hi=_SEED_MAX, defaults={"train": 0}),
    # the experiments' own
    _s("at_epochs", "float", "Epochs at which to measure.", lo=0, hi=1e5),
    _s("draws", "int", "Random draws per measurement.", lo=1, hi=1e6),
    _s("factor", "int", "Factor between the schedules' stages.", lo=2, hi=1e3),
    _s("checkpoints", "int", "Checkpoints along the run.", lo=1, hi=1e4),
    _s("momenta", "floats", "Momentum values to tune over.", lo=0, hi=1, hi_open=True),
    _s("margin", "float", "Relative margin of an equivalence test.", lo=1, hi=100, lo_open=True),
    _s("resamples", "int", "Bootstrap resamples.", lo=100, hi=1e6),
    _s("adam_lr", "float", "Adam's learning-rate centre at the reference batch size.", lo=0, hi=1e6, lo_open=True),
    _s("lr_step", "float", "Ratio between neighbouring rates of a grid.", lo=1, hi=1e3, lo_open=True),
    _s("basin_tolerance", "float", "Rates within this fraction of the best steps count as the basin.", lo=0, hi=10,
       lo_open=True),
    _s("same_margin", "float", "Ratio within which two quantities count as the same.", lo=1, hi=100, lo_open=True),
    _s("loose_margin", "float", "Margin of the looser target over the strict one.", lo=0, hi=1, lo_open=True),
    _s("fall_margin", "float", "Ratio by which the rate must fall past its peak.", lo=1, hi=100, lo_open=True),
    _s("peak_range", "float", "Factor around B_simple within which the peak must lie.", lo=1, hi=1e3, lo_open=True),
    _s("widths", "ints", "Hidden widths to compare.", lo=1, hi=1e6),
    _s("width", "int", "Hidden width.", lo=1, hi=1e6),
    _s("data_fractions", "floats", "Fractions of the training set.", lo=0, hi=1, lo_open=True),
    _s("multipliers", "ints", "Multiples of the batch size to branch with.", lo=1, hi=1e4, unique=True),
    _s("branch_epochs", "float", "Epochs of examples each branch trains.", lo=0, hi=1e4, lo_open=True),
    _s("tolerance", "float", "Progress this fraction short of the base branch's still counts as the same.", lo=0,
       hi=1, hi_open=True),
    _s("move_margin", "float", "Ratio beyond which B_crit counts as moved.", lo=1, hi=100, lo_open=True),
]}


def for_command(command):
    """{name: Setting} of the settings `command` takes, in table order."""
    return {n: s for n, s in SETTINGS.items() if command in s.defaults}


def defaults(command):
    """{name: default} of a command's settings (lists copied)."""
    return {n: (list(s.defaults[command]) if isinstance(s.defaults[command], list) else
                dict(s.defaults[command]) if isinstance(s.defaults[command], dict) else s.defaults[command])
            for n, s in for_command(command).items()}


def quick_overrides():
    return {n: s.quick for n, s in for_command("bench").items() if s.quick is not None}


def check(name, value, label=None):
    return SETTINGS[name].check(value, label)


def check_all(values, label=lambda name: None):
    """Every known setting of `values` checked (the values are left as given: a study file compares them on
    resume); unknown keys are the caller's."""
    for name, value in values.items():
        if name in SETTINGS:
            check(name, value, label(name))
    return values
