"""The errors for removed 1.x Trainer arguments point to things that exist: every `volt.`/`torch.` path in them
imports (with the keyword arguments shown), every bare `name=` is a Trainer argument, every bare name a module hook
or attribute, and every call on `trainer` a Trainer method taking those arguments."""
import importlib
import inspect
import re

import pytest

import volt
from volt.trainer.trainer import _REMOVED_ARGUMENTS

_PATH_CALL = re.compile(r"\b((?:volt|torch)(?:\.\w+|\([^()]*\))+)")
_SEGMENT = re.compile(r"\.(\w+)|\(([^()]*)\)")


def _resolve(path: str):
    """The object a dotted path names; `(...)` is a call, whose keywords must be parameters of what is called
    (the attribute after it is looked up on the class)."""
    head, _, rest = path.partition(".")
    obj, module_name = importlib.import_module(head), head
    for attribute, arguments in _SEGMENT.findall("." + rest):
        if attribute:
            try:
                module_name = f"{module_name}.{attribute}"
                obj = importlib.import_module(module_name)
            except ModuleNotFoundError:
                obj = getattr(obj, attribute)
        else:
            parameters = inspect.signature(obj).parameters
            for keyword in re.findall(r"(\w+)=", arguments):
                assert keyword in parameters, f"{path}: {obj} takes no {keyword!r}"
    return obj


def _check_trainer_keywords(code: str, function) -> None:
    parameters = inspect.signature(function).parameters
    for keyword in re.findall(r"(\w+)=", code):
        assert keyword in parameters, f"{code}: {function.__qualname__} takes no {keyword!r}"


@pytest.mark.parametrize("argument", sorted(_REMOVED_ARGUMENTS))
def test_removal_message_names_what_exists(argument):
    advice = _REMOVED_ARGUMENTS[argument]
    with pytest.raises(TypeError, match=re.escape(advice)):
        volt.Trainer(**{argument: 1})
    for code in re.findall(r"`([^`]+)`", advice):
        paths = _PATH_CALL.findall(code)
        for path in paths:
            assert _resolve(path) is not None
        calls = re.findall(r"trainer\.(\w+)\(([^()]*)\)", code)
        for method, arguments in calls:
            _check_trainer_keywords(arguments, getattr(volt.Trainer, method))
        if not paths and not calls:
            if "=" in code:  # Trainer arguments, e.g. `accelerator='tpu', devices=N`
                _check_trainer_keywords(code, volt.Trainer.__init__)
            else:  # a module hook or attribute, e.g. `on_before_optimizer_step`, `self.prepare_data_per_node`
                name = code.split(".")[-1]
                assert hasattr(volt.LightningModule(), name) or name == "__init__", code
        # a class named anywhere in the advice is named by its import path
        for class_name in re.findall(r"\b([A-Z]\w+)\(", code):
            assert any(path.split("(")[0].endswith("." + class_name) for path in paths), f"{code}: {class_name}"


def test_tuner_messages_name_the_tuner():
    for argument, method in (("auto_lr_find", "lr_find"), ("auto_scale_batch_size", "scale_batch_size")):
        with pytest.raises(TypeError, match=rf"volt\.tuner\.Tuner\(trainer\)\.{method}\(model\)"):
            volt.Trainer(**{argument: True})
