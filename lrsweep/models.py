"""The models a sweep can train: `mlp` and `cnn`, shapes taken from the dataset.

The arguments are checked in plain Python (a sweep file is validated without Keras); the
model is built with Keras inside a trial.
"""

from lrsweep.errors import LrsweepError, shown
from lrsweep.schedules.registry import COUNT_MAX, whole

MODELS = {
    # name: {argument: default}
    "mlp": {"hidden": (64,), "activation": "relu", "dropout": 0.0},
    "cnn": {"filters": (32, 64), "dense": 128, "dropout": 0.0},
}

# The most units (or filters) a layer may have: TensorFlow takes a layer's size as an int32.
MAX_UNITS = COUNT_MAX


# The names Keras' activations answer to that a Dense layer can take alone (all of
# `keras.activations` but `threshold`, which needs arguments of its own); a test holds them
# to the installed Keras.
ACTIVATIONS = ("celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
               "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu",
               "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid",
               "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink")


def check_model(name, args):
    """The model's full arguments (defaults filled in), checked; else LrsweepError."""
    if not isinstance(name, str) or name not in MODELS:
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
                    whole(n, 1, MAX_UNITS) for n in sizes):
                raise LrsweepError(f"Argument `{key}` must be a list of integers from 1 to {MAX_UNITS}. "
                                   f"Received: {key}={shown(sizes)}")
            full[key] = tuple(sizes)
    if "dense" in full and not whole(full["dense"], 1, MAX_UNITS):
        raise LrsweepError(f"Argument `dense` must be an integer from 1 to {MAX_UNITS}. "
                           f"Received: dense={shown(full['dense'])}")
    dropout = full["dropout"]
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise LrsweepError(f"Argument `dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if "activation" in full and full["activation"] not in ACTIVATIONS:
        raise LrsweepError(f"Argument `activation` must be a Keras activation name ({', '.join(ACTIVATIONS)}). "
                           f"Received: activation={full['activation']!r}")
    return full


def check_model_input(name, dataset):
    """A `cnn` reads images (height, width, channels): not the rows of a table dataset."""
    if name == "cnn" and dataset.kind != "image":
        raise LrsweepError(f"Argument `model` must be 'mlp' for {dataset.name}, a table of features (a cnn reads "
                           f"images). Received: model='cnn'")


def check_model_shape(name, args, input_shape):
    """A `cnn`'s poolings each halve its images: no more of them than the images' side allows
    (Keras' error, in every trial, was that an output size would be zero)."""
    if name != "cnn":
        return
    filters = check_model(name, args)["filters"]
    side = min(input_shape[:2])
    if side < 2 ** len(filters):
        most = side.bit_length() - 1
        raise LrsweepError(f"Argument `filters` must list at most {most} layer(s) for images of "
                           f"{input_shape[0]}x{input_shape[1]}: each halves them (max pooling). "
                           f"Received: filters={filters!r}")


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
