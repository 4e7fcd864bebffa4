"""bertfit: fine-tune, evaluate and serve BERT-family text classifiers.

    from bertfit import load_config, train, evaluate_run, Predictor
    result = train(load_config("run.yaml", ["--train.lr", "3e-5"]))
    Predictor(result.run_dir).predict(["Stocks rallied on Friday"])
"""

__version__ = "0.1.0"

_API = {
    "load_config": "bertfit.config", "RunConfig": "bertfit.config", "DataConfig": "bertfit.config",
    "ModelConfig": "bertfit.config", "TrainConfig": "bertfit.config",
    "train": "bertfit.train", "TrainResult": "bertfit.train",
    "evaluate_run": "bertfit.evaluate", "Predictor": "bertfit.predict", "Prediction": "bertfit.predict",
    "load_dataset": "bertfit.data", "inspect_data": "bertfit.inspection", "fit_temperature": "bertfit.calibration",
    "render_report": "bertfit.report", "render_compare": "bertfit.report", "render_model_card": "bertfit.model_card",
    "integrated_gradients": "bertfit.explain", "BertfitError": "bertfit.errors", "ConfigError": "bertfit.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """Import the public API lazily, so `bertfit --help` does not wait for torch."""
    if name not in _API:
        raise AttributeError(f"module 'bertfit' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_API[name]), name)
