"""The models a sweep can train: `mlp` and `cnn`, shapes taken from the dataset.

The arguments are checked in plain Python (a sweep file is validated without Keras); the
model is built with Keras inside a trial.
"""

from lrsweep.errors import LrsweepError

MODELS = {
    # name: {argument: default}
    "mlp": {"hidden": (64,), "activation": "relu", "dropout": 0.0},
    "cnn": {"filters": (32, 64), "dense": 128, "dropout": 0.0},
}


def check_model(name, args):
    """The model's full arguments (defaults filled in), checked; else LrsweepError."""
    if name not in MODELS:
        raise LrsweepError(f"Unknown model: {name!r}. Valid models: {', '.join(MODELS)}")
    unknown = set(args) - set(MODELS[name])
    if unknown:
        key = sorted(unknown)[0]
        raise LrsweepError(f"Unknown argument `{key}` for model `{name}`. Valid arguments: {', '.join(MODELS[name])}")
    full = {**MODELS[name], **args}
    for key in ("hidden", "filters"):
        if key in full:
            sizes = full[key]
            if not isinstance(sizes, (tuple, list)) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
                raise LrsweepError(f"Argument `{key}` must be a list of integers >= 1. Received: {key}={sizes!r}")
            full[key] = tuple(sizes)
    if "dense" in full and (not isinstance(full["dense"], int) or full["dense"] < 1):
        raise LrsweepError(f"Argument `dense` must be an integer >= 1. Received: dense={full['dense']!r}")
    dropout = full["dropout"]
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LrsweepError(f"Argument `dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if "activation" in full and not isinstance(full["activation"], str):
        raise LrsweepError(f"Argument `activation` must be a Keras activation name. "
                           f"Received: activation={full['activation']!r}")
    return full


def build_model(name, args, input_shape, num_classes):
    """A Keras model for `input_shape` inputs; binary tasks end in one sigmoid unit."""
    import keras
    from keras import layers

    args = check_model(name, args)
    stack = [keras.Input(input_shape)]
    if name == "cnn":
        for filters in args["filters"]:
            stack += [layers.Conv2D(filters, 3, padding="same", activation="relu"), layers.MaxPooling2D()]
        stack += [layers.Flatten(), layers.Dense(args["dense"], activation="relu")]
    else:
        stack.append(layers.Flatten())
        for units in args["hidden"]:
            stack.append(layers.Dense(units, activation=args["activation"]))
            if args["dropout"]:
                stack.append(layers.Dropout(args["dropout"]))
    if name == "cnn" and args["dropout"]:
        stack.append(layers.Dropout(args["dropout"]))
    binary = num_classes == 2
    stack.append(layers.Dense(1 if binary else num_classes, activation="sigmoid" if binary else "softmax"))
    return keras.Sequential(stack, name=name)


def loss_for(num_classes):
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"
