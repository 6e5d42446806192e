"""Bigram subnetworks: the minimal weights of a transformer that map current to next token.

Reproduces Chang & Bergen (NeurIPS 2025) as a library and a Snakemake pipeline. Importing the
package is cheap; submodules pull in torch and transformers only when used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
