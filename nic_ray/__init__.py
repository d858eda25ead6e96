"""nic-ray: Neural Image Compression of gigapixel pathology slides, distributed with Ray."""

__version__ = "0.1.0"
