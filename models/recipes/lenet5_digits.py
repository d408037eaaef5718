"""Recipe for the bundled LeNet-5 model trained on scikit-learn's digits data.

Run from the repository root::

    pip install torch==2.13.0 scikit-learn
    python models/recipes/lenet5_digits.py [--out-dir models]

It writes three files into the output directory:

* ``lenet5_digits.onnx`` -- the trained network (opset 13, input ``input``
  of shape ``[batch, 1, 32, 32]``, output ``logits`` of shape ``[batch, 10]``).
* ``lenet5_digits_calib.npz`` -- 256 preprocessed training images
  (key ``input``) for post-training quantization calibration.
* ``lenet5_digits_test.npz`` -- the 540 held-out test images (key
  ``input``) and their labels (key ``labels``).

Everything is seeded, so running the recipe twice gives the same data files
and the same model.

The data helpers (:func:`preprocess`, :func:`split_indices`) need only numpy
and can be imported without torch or scikit-learn installed.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

SEED = 0
N_TEST = 540
N_CALIB = 256
UPSAMPLE = 4
IMAGE_SIZE = 8 * UPSAMPLE
N_CLASSES = 10
EXPECTED_PARAMS = 61_706
OPSET = 13
MODEL_NAME = "lenet5_digits"
SOURCE = "onnxslim models/recipes/lenet5_digits.py"
MIN_TEST_ACCURACY = 0.97
EPOCHS = 30


class Split(NamedTuple):
    """Index arrays of the fixed data split.

    Attributes:
        train: Indices of all non-test samples, in permuted order.
        calib: Indices of the calibration samples, a subset of ``train``.
        test: Indices of the held-out test samples.
    """

    train: np.ndarray
    calib: np.ndarray
    test: np.ndarray


def preprocess(images_8x8: np.ndarray) -> np.ndarray:
    """Turns raw 8x8 digit images into LeNet-5 network inputs.

    Pixel values (0..16 in the digits data set) are scaled to [0, 1] and each
    pixel is repeated 4x4 (nearest-neighbour upsampling) to give 32x32 images.

    Args:
        images_8x8: Raw images, shape ``(N, 8, 8)`` or ``(N, 64)``, values
            in 0..16.

    Returns:
        A C-contiguous float32 array of shape ``(N, 1, 32, 32)``.

    Raises:
        ValueError: If the input does not hold 8x8 images.
    """
    images = np.asarray(images_8x8, dtype=np.float32)
    if images.ndim == 2 and images.shape[1] == 64:
        images = images.reshape(-1, 8, 8)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"expected images of shape (N, 8, 8) or (N, 64), got {images.shape}")
    scaled = images / np.float32(16.0)
    upsampled = np.repeat(np.repeat(scaled, UPSAMPLE, axis=1), UPSAMPLE, axis=2)
    return np.ascontiguousarray(upsampled[:, None, :, :], dtype=np.float32)


def split_indices(
    n_samples: int, *, n_test: int = N_TEST, n_calib: int = N_CALIB, seed: int = SEED
) -> Split:
    """Makes the fixed train / calibration / test split.

    One permutation from ``np.random.default_rng(seed)`` decides everything:
    its first ``n_test`` entries are the test set, the rest is the training
    set, and the first ``n_calib`` training entries are the calibration set.
    Calibration is therefore a subset of training (normal for post-training
    quantization) and never overlaps the test set.

    Args:
        n_samples: Number of samples in the data set.
        n_test: Number of test samples.
        n_calib: Number of calibration samples, drawn from the training part.
        seed: Seed for ``np.random.default_rng``.

    Returns:
        The :class:`Split` of index arrays.

    Raises:
        ValueError: If the sizes do not fit in ``n_samples``.
    """
    if n_test <= 0 or n_calib <= 0 or n_test + n_calib > n_samples:
        raise ValueError(f"cannot take {n_test} test + {n_calib} calibration samples from {n_samples}")
    order = np.random.default_rng(seed).permutation(n_samples)
    test = order[:n_test]
    train = order[n_test:]
    calib = train[:n_calib]
    assert np.intersect1d(calib, test).size == 0, "calibration and test overlap"
    assert np.intersect1d(train, test).size == 0, "train and test overlap"
    return Split(train=train, calib=calib, test=test)


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Loads and preprocesses scikit-learn's digits data set.

    Returns:
        ``(inputs, labels)``: float32 ``(1797, 1, 32, 32)`` and int64 ``(1797,)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return preprocess(digits.images), digits.target.astype(np.int64)


def build_model() -> torch.nn.Module:
    """Builds the classic LeNet-5 (ReLU and max-pooling variant).

    Returns:
        An untrained ``torch.nn.Sequential`` mapping ``(N, 1, 32, 32)`` to
        ``(N, 10)`` logits. Its layers are named (``conv1``, ``fc1``, ...), so
        the exported initializers are ``conv1.weight``, ``fc1.bias`` and so on.
    """
    from collections import OrderedDict

    from torch import nn

    layers = OrderedDict(
        conv1=nn.Conv2d(1, 6, kernel_size=5),
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, kernel_size=5),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(16 * 5 * 5, 120),
        relu3=nn.ReLU(),
        fc2=nn.Linear(120, 84),
        relu4=nn.ReLU(),
        fc3=nn.Linear(84, N_CLASSES),
    )
    return nn.Sequential(layers)


def count_parameters(model: torch.nn.Module) -> int:
    """Counts the trainable parameters of a torch model.

    Args:
        model: The model.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters())


def seed_everything(*, seed: int = SEED) -> None:
    """Makes torch training reproducible on CPU.

    Args:
        seed: Seed for torch's global generator.
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    try:
        torch.use_deterministic_algorithms(True)
    except Exception as exc:  # pragma: no cover - depends on the torch build
        print(f"warning: deterministic algorithms unavailable: {exc}")


def random_shift(inputs: np.ndarray, *, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Shifts each image by a random whole number of pixels (training augmentation).

    Each image moves independently by ``-max_shift..max_shift`` pixels along
    both axes; pixels moved in from outside are zero (background).

    Args:
        inputs: float32 ``(N, C, H, W)``.
        rng: The numpy generator that draws the shifts.
        max_shift: Largest shift in pixels along each axis.

    Returns:
        The shifted images, same shape and dtype as ``inputs``.
    """
    if max_shift <= 0:
        return inputs
    n, _, height, width = inputs.shape
    padded = np.pad(inputs, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(0, 2 * max_shift + 1, size=n)
    dx = rng.integers(0, 2 * max_shift + 1, size=n)
    rows = dy[:, None] + np.arange(height)[None, :]
    cols = dx[:, None] + np.arange(width)[None, :]
    batch = np.arange(n)[:, None, None]
    # (N, H, W, C) after advanced indexing on axes 0, 2, 3; move channels back.
    shifted = padded.transpose(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return np.ascontiguousarray(shifted.transpose(0, 3, 1, 2))


def train(
    model: torch.nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = EPOCHS,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_shift: int = 2,
    seed: int = SEED,
) -> None:
    """Trains the model in place with Adam, a one-cycle schedule and shifts.

    Each epoch sees every training image once, shifted at random by up to
    ``max_shift`` pixels (see :func:`random_shift`); without that
    augmentation LeNet-5 overfits the 1,257 training images and stays near
    97% test accuracy.

    Args:
        model: The model to train.
        inputs: Training inputs, float32 ``(N, 1, 32, 32)``.
        labels: Training labels, int64 ``(N,)``.
        epochs: Number of passes over the training data.
        batch_size: Mini-batch size.
        lr: Peak learning rate of the one-cycle schedule.
        max_shift: Largest random shift in pixels (0 turns augmentation off).
        seed: Seed of the generators for shifts and mini-batch order.
    """
    import torch

    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(inputs) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        x = torch.from_numpy(random_shift(inputs, rng=rng, max_shift=max_shift))
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}/{epochs}: train loss {total / len(x):.4f}")
    model.eval()


def torch_logits(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """Runs the torch model in inference mode.

    Args:
        model: The model.
        inputs: float32 ``(N, 1, 32, 32)``.

    Returns:
        float32 logits ``(N, 10)``.
    """
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Exports the model to ONNX with the classic (TorchScript) exporter.

    The graph has input ``input`` ``[batch, 1, 32, 32]`` and output
    ``logits`` ``[batch, 10]`` with a dynamic ``batch`` dimension, opset 13,
    and weights stored as initializers.

    Args:
        model: The trained model (evaluation mode).
        path: Where to write the ``.onnx`` file.
    """
    import torch

    model.eval()
    dummy = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    with warnings.catch_warnings():
        # dynamo=False is deliberate: the classic exporter needs no onnxscript.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def annotate_onnx(path: Path, *, n_params: int, accuracy: str) -> None:
    """Names the graph and adds a doc string and metadata to the exported file.

    The file is rewritten only after it passes the full ONNX checker.

    Args:
        path: The ``.onnx`` file, rewritten in place.
        n_params: Parameter count, recorded as metadata.
        accuracy: Test accuracy measured with onnxruntime, recorded as metadata.
    """
    import onnx

    proto = onnx.load(str(path))
    proto.graph.name = MODEL_NAME
    proto.doc_string = (
        "LeNet-5 (conv5x5x6-relu-maxpool, conv5x5x16-relu-maxpool, fc120-relu, fc84-relu, fc10) "
        "trained on scikit-learn's digits data set (8x8 images scaled to [0,1] and upsampled "
        "4x4 nearest-neighbour to 32x32). Input 'input' float32 [batch,1,32,32]; output "
        "'logits' float32 [batch,10] (no softmax). Built by " + SOURCE + "."
    )
    metadata = {
        "source": SOURCE,
        "dataset": "sklearn digits",
        "architecture": "LeNet-5",
        "preprocessing": "pixel/16.0, 8x8 -> 32x32 nearest-neighbour (np.repeat 4x4), NCHW float32",
        "split": f"np.random.default_rng({SEED}).permutation(1797): first {N_TEST} test, rest train",
        "parameters": str(n_params),
        "test_accuracy": accuracy,
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def check_onnx(path: Path, *, expected_params: int = EXPECTED_PARAMS) -> int:
    """Checks the exported file's structure and counts its initializer elements.

    Args:
        path: The ``.onnx`` file.
        expected_params: The parameter count that the initializers must hold.

    Returns:
        The number of scalar values stored in initializers.

    Raises:
        AssertionError: If the file has the wrong interface or opset.
    """
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["input"], [i.name for i in graph.input]
    assert [o.name for o in graph.output] == ["logits"], [o.name for o in graph.output]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, IMAGE_SIZE, IMAGE_SIZE]
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == N_CLASSES
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == OPSET, opsets
    n_values = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert n_values == expected_params, n_values
    ops = sorted({n.op_type for n in graph.node})
    print(f"onnx: opset {OPSET}, ops {ops}, {len(graph.initializer)} initializers, {n_values} values")
    return n_values


def onnxruntime_logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Runs the ONNX model with onnxruntime on CPU.

    Args:
        path: The ``.onnx`` file.
        inputs: float32 ``(N, 1, 32, 32)``.

    Returns:
        float32 logits ``(N, 10)``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs})
    return logits


def accuracy_text(logits: np.ndarray, labels: np.ndarray) -> str:
    """Formats classification accuracy, e.g. ``"98.52% (532/540)"``.

    Args:
        logits: ``(N, 10)`` scores.
        labels: ``(N,)`` true classes.

    Returns:
        The accuracy as percentage and count.
    """
    correct = int((logits.argmax(axis=1) == labels).sum())
    return f"{100.0 * correct / len(labels):.2f}% ({correct}/{len(labels)})"


def save_data(out_dir: Path, inputs: np.ndarray, labels: np.ndarray, split: Split) -> None:
    """Writes the calibration and test data files.

    Args:
        out_dir: Output directory.
        inputs: All preprocessed inputs, float32 ``(N, 1, 32, 32)``.
        labels: All labels, int64 ``(N,)``.
        split: The data split.
    """
    calib = np.ascontiguousarray(inputs[split.calib], dtype=np.float32)
    test = np.ascontiguousarray(inputs[split.test], dtype=np.float32)
    test_labels = np.ascontiguousarray(labels[split.test], dtype=np.int64)
    np.savez_compressed(out_dir / f"{MODEL_NAME}_calib.npz", input=calib)
    np.savez_compressed(out_dir / f"{MODEL_NAME}_test.npz", input=test, labels=test_labels)
    print(f"data: calib {calib.shape}, test {test.shape} + labels {test_labels.shape}")


def run(*, out_dir: Path, epochs: int = EPOCHS) -> str:
    """Builds all three files of the bundled model.

    Args:
        out_dir: Output directory (created if missing).
        epochs: Training epochs.

    Returns:
        The onnxruntime test accuracy text.

    Raises:
        RuntimeError: If the model misses the accuracy target or onnxruntime
            disagrees with torch.
    """
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything()
    inputs, labels = load_data()
    split = split_indices(len(inputs))
    model = build_model()
    n_params = count_parameters(model)
    assert n_params == EXPECTED_PARAMS, n_params
    train(model, inputs[split.train], labels[split.train], epochs=epochs)
    test_inputs, test_labels = inputs[split.test], labels[split.test]
    reference = torch_logits(model, test_inputs)
    torch_accuracy = accuracy_text(reference, test_labels)
    print(f"torch test accuracy: {torch_accuracy}")

    model_path = out_dir / f"{MODEL_NAME}.onnx"
    export_onnx(model, model_path)
    logits = onnxruntime_logits(model_path, test_inputs)
    max_diff = float(np.abs(logits - reference).max())
    single = onnxruntime_logits(model_path, test_inputs[:1])
    if max_diff > 1e-4 or not np.allclose(single, logits[:1], atol=1e-5):
        raise RuntimeError(f"onnxruntime disagrees with torch: max abs diff {max_diff:g}")
    ort_accuracy = accuracy_text(logits, test_labels)
    correct = int((logits.argmax(axis=1) == test_labels).sum())
    if correct < MIN_TEST_ACCURACY * len(test_labels):
        raise RuntimeError(f"test accuracy {ort_accuracy} is below {MIN_TEST_ACCURACY:.0%}")
    annotate_onnx(model_path, n_params=n_params, accuracy=ort_accuracy)
    check_onnx(model_path)
    if not np.array_equal(onnxruntime_logits(model_path, test_inputs), logits):
        raise RuntimeError("annotating the ONNX file changed its outputs")
    save_data(out_dir, inputs, labels, split)
    print(f"onnxruntime vs torch max abs diff: {max_diff:.3g}")
    print(f"parameters: {n_params}")
    print(f"onnxruntime test accuracy: {ort_accuracy}")
    print(f"{model_path}: {model_path.stat().st_size} bytes; done in {time.perf_counter() - started:.1f}s")
    return ort_accuracy


def main(argv: list[str] | None = None) -> None:
    """Parses the command line and runs the recipe.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="output directory (default: the models/ directory holding this recipe)",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default: {EPOCHS})")
    args = parser.parse_args(argv)
    run(out_dir=args.out_dir, epochs=args.epochs)


if __name__ == "__main__":
    main()
