"""cnnlab: reproducible convolutional-network studies for image recognition."""

__version__ = "0.1.0"
