"""divspa: DivSPA positive augmentation as a Spark + Delta Lake batch pipeline."""

__version__ = "0.1.0"
