"""What leaves the process: the download zip (export, tensors, the ONNX check), the HTML report, its plots."""
