"""Running a trained model fast: channels-last, AMP, torch.compile and CUDA graphs
(:mod:`.perf`), and exports to ONNX, AOTInductor and TensorRT (:mod:`.export`).
"""
