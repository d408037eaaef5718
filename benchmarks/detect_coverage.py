"""Which classes of the ``detect`` task does each split make the fp32 model score? (one table)

Run (from the repository root)::

    python -m benchmarks.detect_coverage [--calib N]

Pruning reads only the calibration split (importance, sensitivity, re-fit), so a class that the
fp32 model never scores on it cannot be protected there, while the eval split's pseudo ground
truth may still contain it. For each class the table gives the model's ``names`` label, its
highest score and the anchors at confidence ≥ 0.25 on each split, and the class's pseudo-GT boxes
on the eval split (after NMS, as :func:`benchmarks.tasks.detect.metric` counts them; classes
with at least ``MIN_CLASS_BOXES`` are averaged in mAP). Classes no split scores ≥ 0.01 are left
out.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run_tasks import DEFAULT_DATA_DIR, task_data  # noqa: E402
from benchmarks.tasks import load_task, reference_model  # noqa: E402
from onnxslim.report import markdown_table  # noqa: E402

__all__ = ["outputs", "main"]


def outputs(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """The model's ``[N, 4 + classes, anchors]`` output for every image, one image per run."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + 1]})[0] for i in range(len(images))])


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calib", type=int, default=64, help="calibration samples (default 64, as benchmarks.prune)")
    args = parser.parse_args(argv)
    detect = load_task("detect")
    path = reference_model(detect)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    names = ast.literal_eval(meta.get("names", "{}"))
    data = task_data("detect", detect, data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=args.calib,
                     regenerate=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = {split: outputs(session, np.load(p)["images"]) for split, p in
           (("calib", data.calib_path), ("eval", data.eval_path))}
    scores = {split: out[:, 4:] for split, out in raw.items()}
    boxes = np.concatenate([detect.postprocess(out[None])[2] for out in raw["eval"]])
    rows = []
    for k in range(scores["eval"].shape[1]):
        peak = {s: float(v[:, k].max()) for s, v in scores.items()}
        if max(peak.values()) < 0.01:
            continue
        rows.append([k, names.get(k, "?"), f"{peak['calib']:.2f}", int(np.sum(scores["calib"][:, k] >= 0.25)),
                     f"{peak['eval']:.2f}", int(np.sum(scores["eval"][:, k] >= 0.25)), int(np.sum(boxes == k))])
    print(f"{path.name}: calibration {len(scores['calib'])} images, eval {len(scores['eval'])} images; "
          f"classes averaged in mAP need ≥ {detect.MIN_CLASS_BOXES} pseudo-GT boxes\n")
    print(markdown_table(["class", "name", "calib max score", "calib anchors ≥ 0.25", "eval max score",
                          "eval anchors ≥ 0.25", "eval pseudo-GT boxes"], rows))


if __name__ == "__main__":  # pragma: no cover
    main()
