"""The one trial runner: plain settings in, a trace as plain arrays out, in this process or on a worker.

Used by the study (minigrad.study), every experiment (minigrad.experiments) and `minigrad train`:

  config   the model and data: data, data_options, data_seed, train_subset, hidden, activation, loss, dtype,
           backend, optimizer, momentum, weight_decay, eval_growth, sampler, and for Adam beta2, beta2_rule,
           beta2_halflife with reference_batch_size (beta2 at each B: minigrad.training.schedules.scaled_beta2)
           (missing keys take the defaults below)
  spec     one trial: a minigrad.training.spec.TrialSpec (run_id, batch_size, lr, seed, a budget, and what this
           trial overrides or adds: target, schedules, sampler, instruments, threads, ...)

The result is a dict run_id, attrs (the trace's, plus the spec's bookkeeping keys), columns and arrays, which
pickles cheaply and goes to minigrad.store as it is.
"""
DEFAULTS = {"data_options": {}, "data_seed": 0, "activation": "relu", "loss": "cross_entropy", "dtype": "float32",
            "backend": "blas", "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0, "eval_growth": 1.04,
            "sampler": "shuffle", "beta2": 0.999, "beta2_rule": "fixed", "beta2_halflife": None,
            "reference_batch_size": None}
RECORDED = ("phase", "role", "tag", "epochs", "lr_factor", "momentum")  # spec fields kept in the run's attrs

_DATA = {}


def load_data(config):
    """The config's dataset, loaded once per process; with train_subset = n, the first n training examples (the
    split is already random; validation and test unchanged)."""
    from minigrad import data

    options = config.get("data_options") or {}
    seed, subset = config.get("data_seed", 0), config.get("train_subset")
    key = (config["data"], seed, repr(sorted(options.items())), subset)
    if _DATA.get("key") != key:
        dataset = data.load(config["data"], seed=seed, **options)
        _DATA["data"], _DATA["key"] = dataset.subset(subset) if subset else dataset, key
    return _DATA["data"]


def prepare(config, spec):
    """The trial's settings checked and built without training: (config with defaults, dataset, budget, learning-rate
    schedule, batch schedule). Raises ValueError naming what is wrong, so a caller can check a trial before it
    creates any file."""
    from minigrad.training.schedules import BatchSchedule, LRSchedule
    from minigrad.training.train import Budget

    cfg = dict(DEFAULTS, **config)
    dataset = load_data(cfg)
    n_train, B = len(dataset.y_train), spec.batch_size
    if not 1 <= B <= n_train:
        raise ValueError(f"batch size {B} must lie between 1 and the training split's {n_train} examples")
    budget = Budget(steps=spec.steps, examples=spec.examples, epochs=spec.epochs)
    lr_schedule = batch_schedule = None
    if spec.lr_schedule:
        lr_schedule = LRSchedule(spec.lr, **dict(dict(total_epochs=budget.total_epochs(B, n_train)),
                                                 **spec.lr_schedule))
    if spec.batch_schedule:
        batch_schedule = BatchSchedule(B, **spec.batch_schedule)
    return cfg, dataset, budget, lr_schedule, batch_schedule


def run_trial(config, spec, progress=None):
    """Train one trial (see the module docstring); progress: callable(fraction done) at each evaluation."""
    from minigrad.training.train import build_model, optimizer_options, train

    cfg, dataset, budget, lr_schedule, batch_schedule = prepare(config, spec)
    B = spec.batch_size
    model = build_model(dataset, cfg["hidden"], activation=cfg["activation"], loss=cfg["loss"], dtype=cfg["dtype"],
                        backend=cfg["backend"], seed=spec.seed)
    optimizer = spec.setting("optimizer", cfg)
    adam = adam_settings(cfg, spec, B) if optimizer == "adam" else {}
    trace = train(model, dataset, B, spec.lr, optimizer, budget=budget, target=spec.target,
                  stop_at_target=spec.stop_at_target, lr_schedule=lr_schedule,
                  batch_schedule=batch_schedule, sampler=spec.setting("sampler", cfg),
                  drop_last=spec.drop_last, patience=spec.patience, seed=spec.seed,
                  eval_growth=spec.setting("eval_growth", cfg), eval_hooks=_hooks(spec),
                  optimizer_options=optimizer_options(optimizer, spec.setting("momentum", cfg),
                                                      cfg["weight_decay"], adam.get("beta2")),
                  progress=progress, threads=spec.threads, censor_steps=spec.censor_steps)
    attrs = dict(trace.attrs, lr=spec.lr, budget_epochs=spec.epochs, budget_steps=spec.steps,
                 **{k: getattr(spec, k) for k in RECORDED if getattr(spec, k) is not None}, **adam)
    if trace.status != "DIVERGED" and (spec.evaluate_train or spec.curvature):
        attrs["train_loss_final"], attrs["train_error"] = model.evaluate(
            dataset.X_train.astype(model.dtype, copy=False), dataset.y_train)
        attrs["generalisation_gap"] = attrs["test_error"] - attrs["train_error"]
        if spec.curvature:
            from minigrad.instruments.hessian import curvature

            attrs.update(curvature(model, dataset, spec.curvature, spec.seed))
    arrays = {"params": trace.params} if spec.keep_params else {}
    return dict(run_id=spec.run_id, attrs=attrs, columns=trace.columns, arrays=arrays)


def adam_settings(cfg, spec, batch_size):
    """Adam's per-B settings, recorded in the run's attrs: beta2 (the spec's, else the config's rule at this B), the
    rule, and the half-life in samples that beta2 has at this B."""
    from minigrad.training.schedules import beta2_halflife, scaled_beta2

    beta2 = spec.beta2
    rule = spec.beta2_rule or ("given" if beta2 is not None else cfg["beta2_rule"])
    if beta2 is None:
        beta2 = scaled_beta2(cfg["beta2"], batch_size, rule, cfg["beta2_halflife"], cfg["reference_batch_size"])
    return dict(beta2=float(beta2), beta2_rule=rule, beta2_halflife=beta2_halflife(beta2, batch_size))


def _hooks(spec):
    hooks = []
    if spec.gns:
        from minigrad.instruments.noise import GNSHook

        hooks.append(GNSHook(seed=spec.seed, **spec.gns))
    if spec.two_batch_gns:
        from minigrad.instruments.noise import TwoBatchHook

        hooks.append(TwoBatchHook(seed=spec.seed, **spec.two_batch_gns))
    if spec.full_gns:
        from minigrad.instruments.noise import FullNoiseHook

        hooks.append(FullNoiseHook(spec.full_gns, spec.total_steps, spec.target))
    return hooks
