"""The optimized program as an MLflow DSPy model: servable, and holding no secret.

MLflow's DSPy flavor pickles the global `dspy.settings` with the model. Those settings hold
the user's `dspy.LM` (with its API key) and, re-applied on every `predict`, they override the
LM the user configures where the model is served, so a loaded model could only answer with
the key it was logged with, or not at all ("No LM is loaded"). Here the model is logged with
DSPy's own save format (`use_dspy_model_save`: `program.pkl` + `metadata.json`, written by
`dspy.Module.save(save_program=True)`, still a cloudpickle), from a copy of the program with
every LM removed, and its settings file is rewritten to the portable part (the adapter and
MLflow's own tracing callback). Before the model is uploaded, every file is searched for the
keys of the LMs involved; a hit means the model is not logged at all.

Serving, after `mlflow.pyfunc.load_model(uri)`: `dspy.configure(lm=dspy.LM(...))` in the
serving process, then `model.predict({"input": "..."})`.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dspy

SETTINGS_FILE = "dspy_config.pkl"  # mlflow.dspy.save._DSPY_SETTINGS_FILE_NAME (checked by a test)
_RUN_ATTRIBUTES = ("result", "candidate_programs", "trial_logs", "run_id", "run_dir")  # set by the lifecycle
logger = logging.getLogger(__name__)


class SecretInModel(RuntimeError):
    """A saved model file contains an API key: it is not logged."""


def lm_secrets(program: dspy.Module, extra: Iterable[Any] = ()) -> set[str]:
    """The API keys of the LMs the program, DSPy's settings and `extra` (LMs) carry."""
    import dspy as dspy_module

    lms = [p.lm for _, p in program.named_predictors() if getattr(p, "lm", None) is not None]
    lms += [dspy_module.settings.lm, *extra]
    keys = set()
    for lm in lms:
        key = (getattr(lm, "kwargs", None) or {}).get("api_key") if lm is not None else None
        if isinstance(key, str) and len(key) >= 6:
            keys.add(key)
    return keys


def portable_copy(program: dspy.Module) -> dspy.Module:
    """A deep copy of the program without LMs and without the run's bookkeeping attributes."""
    import dspy as dspy_module

    kept = {name: program.__dict__.pop(name) for name in _RUN_ATTRIBUTES if name in program.__dict__}
    try:
        clean = program.deepcopy()
    finally:
        program.__dict__.update(kept)
    for module in [clean, *(m for _, m in clean.named_sub_modules())]:
        for name, value in list(vars(module).items()):
            if isinstance(value, dspy_module.BaseLM):
                setattr(module, name, None)
    return clean


def portable_settings() -> dict[str, Any]:
    """The part of `dspy.settings` that may travel with a model: never an LM, RM or usage tracker.
    `callbacks` must exist (the flavor's loader reads it); only MLflow's tracing callback is kept."""
    import dspy as dspy_module

    config = dspy_module.settings.config
    callbacks = [c for c in config.get("callbacks") or [] if type(c).__module__.startswith("mlflow.")]
    settings: dict[str, Any] = {"callbacks": callbacks}
    adapter = config.get("adapter")
    if adapter is not None and type(adapter).__module__.startswith("dspy.adapters"):
        settings["adapter"] = adapter
    return settings


def find_secrets(root: Path, secrets: Iterable[str]) -> list[str]:
    """Relative paths of the files under `root` that contain any of `secrets` (bytes, any encoding)."""
    needles = [s.encode() for s in secrets if s]
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n in data for n in needles):
            hits.append(str(path.relative_to(root)))
    return hits


def _flavor(secrets: set[str]) -> types.SimpleNamespace:
    """MLflow's DSPy flavor with two steps after `save_model`: portable settings, secret check."""
    import cloudpickle
    import mlflow.dspy

    def save_model(path: str, mlflow_model: Any = None, validate_serving_input: bool = False, **kwargs: Any):
        # The flavor pickles all of `dspy.settings`: an LM configured with `dspy.configure` that
        # cannot be pickled (a custom engine holding a lock) would make it fail; only the portable
        # part is in the settings while it saves (a thread-local override, gone afterwards).
        import dspy

        portable = portable_settings()
        with dspy.context(**({key: None for key in dspy.settings.config} | portable)):
            mlflow.dspy.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        settings_file = Path(path) / "data" / SETTINGS_FILE
        with open(settings_file, "wb") as f:  # only the portable keys: the others' None would be configured
            cloudpickle.dump(portable, f)
        if hits := find_secrets(Path(path), secrets):
            raise SecretInModel(f"an API key would be saved in {', '.join(hits)}; the model is not logged")

    # Model.log takes the flavor's name from __name__; `validate_serving_input=False` keeps it from
    # calling the model (a paid LM call) while logging.
    return types.SimpleNamespace(__name__="mlflow.dspy", save_model=save_model)


def signature_for(program: dspy.Module, example: dict[str, str]) -> Any:
    """String inputs named like the example's fields; outputs of the program's last predictor."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    predictors = program.predictors()
    outputs = list(predictors[-1].signature.output_fields) if predictors else []
    return ModelSignature(
        inputs=Schema([ColSpec("string", name) for name in example]),
        outputs=Schema([ColSpec("string", name) for name in outputs]) if outputs else None,
    )


def requirements() -> list[str]:
    """Pinned: the program pickle imports reflex_dspy (its adapters) and dspy."""
    import dspy as dspy_module
    import mlflow

    from reflex_dspy import __version__

    return [f"reflex-dspy=={__version__}", f"dspy=={dspy_module.__version__}", f"mlflow=={mlflow.__version__}"]


def log_program_model(
    client: Any, experiment_id: str, program: dspy.Module, *, run_id: str, step: int,
    example: dict[str, str] | None, lms: Iterable[Any] = (),
) -> str:
    """Log `program` to run `run_id` as model `program`, its metrics the run's at `step`; returns
    the model id. The model is created in our experiment first (Model.log would otherwise take
    the fluent API's active experiment); the caller points the fluent tracking URI at our store."""
    from mlflow.models import Model

    secrets = lm_secrets(program, lms)
    clean = portable_copy(program)
    kwargs: dict[str, Any] = {}
    if example:
        kwargs.update(signature=signature_for(clean, example), input_example=dict(example))
    params = {k: str(v) for k, v in client.get_run(run_id).data.params.items()}
    model = client.create_logged_model(experiment_id, name="program", source_run_id=run_id, params=params)
    try:
        Model.log(
            None, name="program", flavor=_flavor(secrets), model=clean, run_id=run_id, step=step, model_id=model.model_id,
            pip_requirements=requirements(), use_dspy_model_save=True, validate_serving_input=False, **kwargs,
        )
        client.finalize_logged_model(model.model_id, "READY")
    except BaseException:
        client.delete_logged_model(model.model_id)  # no empty model left behind
        raise
    return model.model_id
