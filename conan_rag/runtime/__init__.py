"""Running a model: devices and dtypes, the batch forward pass, CPU kernels, unpadded CUDA path."""

__all__: list[str] = []
