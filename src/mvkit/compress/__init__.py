"""Compression: static int8 (ONNX Runtime QDQ) calibrated on real photos, and PyTorch dynamic quantization."""
