"""What `validate` prints: the resolved sweep, without running anything."""

from lrsweep.data.prepare import inputs_text
from lrsweep.schedules.registry import family


def _space_text(arm):
    defaults = {p.name: p.default for p in family(arm.family).params if not p.required}
    given = [f"{name} {spec}" for name, spec in arm.space.items()]
    implied = [f"{name}={value}" for name, value in defaults.items() if name not in arm.space]
    return ", ".join(given + ([f"(defaults: {', '.join(implied)})"] if implied else []))


def describe(sweep, dataset, data=None):
    """What `validate` prints of a sweep: `dataset` its `DatasetRef`, `data` the dataset as
    read (None: it is downloaded at launch)."""
    if sweep.configs is None:
        how = f"{sweep.trial_count} trials sampled by Optuna TPE (seed {sweep.seed})"
        if sweep.trial_count < sweep.num_samples:
            how += f", each configuration of the space once (num_samples {sweep.num_samples})"
        arms = [(arm.label, _space_text(arm)) for arm in sweep.arms.values()]
    else:
        how = f"{len(sweep.configs)} fixed configurations, no search"
        arms = [(arm.label, _space_text(arm)) for arm in sweep.fixed_configs]
    if sweep.early_stopping == "asha" and sweep.grace_period >= sweep.max_epochs:
        stopping = (f"ASHA early stopping, which stops no trial: its grace period ({sweep.grace_period}) is not "
                    f"shorter than a trial")
    elif sweep.early_stopping == "asha":
        stopping = (f"ASHA early stopping (grace period {sweep.grace_period}, reduction factor "
                    f"{sweep.reduction_factor:g}: trials judged at epochs {', '.join(map(str, sweep.rungs))}): "
                    f"promoted trials go on")
    elif sweep.early_stopping == "budget":
        plan = ", then ".join(f"{trials} x {epochs}" for epochs, trials in sweep.budgets)
        stopping = (f"successive halving from scratch (early_stopping='budget'), trials x epochs with the schedule "
                    f"fitted to them: {plan}")
    else:
        stopping = "no early stopping"
    validation = (f"last {sweep.validation_split:g} of the training rows" if sweep.validation_split is not None
                  else "the dataset's test split")
    model_args = ", ".join(f"{k}={v}" for k, v in sweep.model_args.items())
    optimizer_args = ", ".join(f"{k}={v}" for k, v in sweep.optimizer_args.items())
    width = max(len(label) for label, _ in arms)
    lines = [
        f"sweep {sweep.name}: {how}",
        f"  epochs: up to {sweep.max_epochs} per trial, {stopping}; rate updated every {sweep.granularity}",
        f"  dataset: {dataset.source}" + (f" (data_dir {sweep.data_dir})" if sweep.data_dir else "")
        + (f", subsample {sweep.subsample}" if sweep.subsample else "") + f", validation: {validation}",
        f"  data: {len(data.x_train)} training rows ({inputs_text(data.input_shape)} each), {data.num_classes} "
        f"classes, validation: {data.validation}"
        if data is not None else "  data: not here yet; launch downloads it (into Keras' cache)",
        f"  model: {sweep.model}({model_args}), batch size {sweep.batch_size}, "
        f"optimizer {sweep.optimizer}({optimizer_args})",
        f"  metric: {sweep.metric} ({sweep.mode})",
        f"  confirmation: each family's best trial again with {sweep.confirm_seeds} seeds (seeds {sweep.seed + 1}-"
        f"{sweep.seed + sweep.confirm_seeds}), to {sweep.max_epochs} epochs, up to "
        f"{len(sweep.arms) * sweep.confirm_seeds} trials" if sweep.confirm_seeds else "  confirmation: none",
        f"  resources per trial: {sweep.cpus:g} CPU, {sweep.gpus:g} GPU; retries on failure: {sweep.max_failures}; "
        + (f"checkpoints every {sweep.checkpoint_seconds:g} s" if sweep.checkpoint_seconds else "no checkpoints"),
        f"  results: {sweep.results}",
        "  families:",
        *[f"    {label:<{width}}  {text}" for label, text in arms],
    ]
    return "\n".join(lines)
