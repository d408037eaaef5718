"""onnxslim: post-training optimization of ONNX models, proven with onnxruntime."""

__version__ = "0.1.0"

__all__ = ["__version__"]
