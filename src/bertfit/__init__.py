"""bertfit: fine-tune, evaluate and serve BERT-family text classifiers.

    from bertfit import load_config, train, evaluate_run, Predictor
    result = train(load_config("run.yaml", ["--train.lr", "3e-5"]))
    Predictor(result.run_dir).predict(["Stocks rallied on Friday"])

Wherever the API takes a data file it also takes a pandas DataFrame or a datasets.Dataset
(`train(config, data={"train": frame})`, `evaluate_run(run, data=frame)`, `Predictor.predict(frame)`).
"""

import logging as _logging

__version__ = "0.1.0"

# The library logs (never prints) under the "bertfit" logger; the application decides what shows, as the
# logging docs ask of libraries. The CLI shows INFO; silence the API with logging.getLogger("bertfit").setLevel(...).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

_API = {
    "load_config": "bertfit.config", "RunConfig": "bertfit.config", "DataConfig": "bertfit.config",
    "ModelConfig": "bertfit.config", "TrainConfig": "bertfit.config",
    "train": "bertfit.training.recipe", "TrainResult": "bertfit.training.recipe", "plan_run": "bertfit.training.recipe",
    "RunPlan": "bertfit.training.plan",
    "evaluate_run": "bertfit.evaluate.run", "Predictor": "bertfit.infer.predictor", "Prediction": "bertfit.infer.predictor",
    "load_dataset": "bertfit.data.splits", "inspect_data": "bertfit.data.inspection",
    "fit_temperature": "bertfit.evaluate.calibration", "render_report": "bertfit.evaluate.report",
    "render_compare": "bertfit.evaluate.report", "render_model_card": "bertfit.evaluate.model_card",
    "integrated_gradients": "bertfit.evaluate.explain", "export_run": "bertfit.deploy.export",
    "export_hf": "bertfit.deploy.hf_export", "BertfitError": "bertfit.errors", "ConfigError": "bertfit.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """Import the public API lazily, so `bertfit --help` does not wait for torch."""
    if name not in _API:
        raise AttributeError(f"module 'bertfit' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_API[name]), name)
