"""The layer runs that calibration times and the held-out runs that validation compares.

A ``LayerShape`` is one reference-model layer of a design at a width, running a prefill or a
decode step at a context length. Calibration grids and validation cases use different widths
and context lengths, so validation measures the fit on shapes it did not see:

| | widths (d_model) | prefill contexts | decode contexts |
|---|---|---|---|
| calibration (quick, full) | 256, 512, 1024 | 256, 1024, 2048 (full: also 4096 in chunks of 1024) | 1024, 8192, 32768 |
| validation (quick, full) | 384, 640 | 384, 768, 1536 (full: also 3072 in chunks of 768) | 2048, 6144, 16384 |

The quick grid and quick cases cover the designs gqa, mla, dsa (GQA with a DSA indexer) and msa.
The full ones add window layers, MLA with DSA (dsa_mla) and chunked prefills.

The tiny grid and tiny cases are a smoke test for CI: seconds of timing, not a usable fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from ctxsim.spec.errors import SpecError
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.workload import Workload

DESIGNS = ("gqa", "mla", "dsa", "msa", "window", "dsa_mla")
DENSE_DESIGNS = ("gqa", "mla", "window")
# Designs of the quick grid and the quick validation cases.
# NOTE: every design's core shares the one attn.core curve, though the cores run at different
# rates per counted byte (docs/methodology.md, section 14.4).
QUICK_DESIGNS = ("gqa", "mla", "dsa", "msa")
HEAD_DIM = 64
N_KV_HEAD = 2
# Selection sizes shared by every shape, so that contexts of a few hundred tokens already select.
WINDOW = 256
DSA_INDEX_HEADS = 8
DSA_TOPK = 256
MSA_BLOCK = 32
MSA_TOPK_BLOCKS = 8
INDEX_HEAD_DIM = 64
VOCAB = 1024
# The gated MLP's hidden width is FFN_RATIO x d_model.
FFN_RATIO = 3


@dataclass(frozen=True)
class LayerShape:
    """One layer run: a design at a width, in one phase at one context length.

    Heads follow the width: ``d_model / 64`` query heads of 64, two KV heads in the GQA designs,
    and for MLA designs a query and KV latent of ``d_model / 2``. The FFN is a gated MLP of
    ``3 d_model``. ``chunk`` splits a prefill into forward passes of that many tokens.
    """

    design: str
    d_model: int
    phase: str
    context: int
    chunk: int | None = None
    batch: int = 1

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise SpecError(f"unknown design '{self.design}': use one of {', '.join(DESIGNS)}")
        if self.d_model % (HEAD_DIM * N_KV_HEAD):
            raise SpecError(f"invalid d_model {self.d_model}: use a multiple of {HEAD_DIM * N_KV_HEAD}")
        if self.phase not in ("prefill", "decode"):
            raise SpecError(f"invalid phase '{self.phase}': use prefill or decode")

    @property
    def label(self) -> str:
        chunk = f" chunk={self.chunk}" if self.chunk else ""
        return f"{self.design} d_model={self.d_model} {self.phase} N={self.context}{chunk}"

    @property
    def sparse(self) -> bool:
        return self.design not in DENSE_DESIGNS

    @property
    def new_tokens(self) -> int:
        """Tokens the run computes: the whole context for a prefill, one for a decode step."""
        return self.context if self.phase == "prefill" else 1

    @property
    def n_head(self) -> int:
        return self.d_model // HEAD_DIM

    @property
    def ffn(self) -> int:
        return FFN_RATIO * self.d_model

    def chunks(self) -> list[tuple[int, int]]:
        """First and last 1-based positions of each forward pass of the run."""
        if self.phase == "decode":
            return [(self.context, self.context)]
        step = self.chunk or self.context
        return [(first, min(self.context, first + step - 1)) for first in range(1, self.context + 1, step)]

    def _attention(self) -> dict:
        if self.design in ("mla", "dsa_mla"):
            return {
                "kind": "mla", "n_head": self.n_head, "q_lora_rank": self.d_model // 2,
                "kv_lora_rank": self.d_model // 2, "qk_nope_head_dim": HEAD_DIM,
                "qk_rope_head_dim": HEAD_DIM // 2, "v_head_dim": HEAD_DIM,
            }
        return {"kind": "gqa", "n_head": self.n_head, "n_kv_head": N_KV_HEAD, "head_dim": HEAD_DIM}

    def _selection(self) -> dict:
        if self.design == "window":
            return {"kind": "window", "window": WINDOW}
        if self.design in ("dsa", "dsa_mla"):
            return {
                "kind": "dsa", "index_n_heads": DSA_INDEX_HEADS, "index_head_dim": INDEX_HEAD_DIM,
                "index_topk": DSA_TOPK, "indexer": "owner",
            }
        if self.design == "msa":
            return {
                "kind": "msa", "block_size": MSA_BLOCK, "topk_blocks": MSA_TOPK_BLOCKS,
                "index_n_heads": N_KV_HEAD, "index_head_dim": INDEX_HEAD_DIM,
            }
        return {"kind": "dense"}

    def spec(self) -> ModelSpec:
        """Build the one-layer ModelSpec of this shape, with bf16 weights and KV cache."""
        layer = {
            "attention": self._attention(),
            "selection": self._selection(),
            "ffn": {"kind": "dense", "intermediate_size": self.ffn},
        }
        return ModelSpec.model_validate(
            {
                "name": f"{self.design}-{self.d_model}",
                "d_model": self.d_model,
                "vocab_size": VOCAB,
                "layer_kinds": {self.design: layer},
                "layers": [{"kind": self.design, "count": 1}],
            }
        )

    def workload(self) -> Workload:
        return Workload(phase=self.phase, context=self.context, batch=self.batch, chunk_size=self.chunk)


# ---------------------------------------------------------------------------------------------
# Calibration grids


def _latin(
    designs: tuple[str, ...], widths: tuple[int, ...], phase: str, contexts: tuple[int, ...], rotation: int = 0
) -> list[LayerShape]:
    """Pair each design with every width once and every context once, rotating the pairing per design."""
    shapes = []
    for offset, design in enumerate(designs):
        for i, width in enumerate(widths):
            context = contexts[(i + offset + rotation) % len(contexts)]
            shapes.append(LayerShape(design, width, phase, context))
    return shapes


CALIBRATION_WIDTHS = (256, 512, 1024)
CALIBRATION_PREFILL = (256, 1024, 2048)
CALIBRATION_DECODE = (1024, 8192, 32768)


def _quick_grid() -> list[LayerShape]:
    """Two of the three width-context pairings per design and phase: 48 layer runs."""
    shapes = []
    for rotation in (0, 1):
        shapes += _latin(QUICK_DESIGNS, CALIBRATION_WIDTHS, "prefill", CALIBRATION_PREFILL, rotation)
        shapes += _latin(QUICK_DESIGNS, CALIBRATION_WIDTHS, "decode", CALIBRATION_DECODE, rotation)
    return shapes


def _full_grid() -> list[LayerShape]:
    # NOTE: window layers and chunked prefills are timed in the full grid only. The reference
    # model computes their cores as masked rectangles over every key the chunk holds, but the
    # counts charge only the keys each query attends. Their ops therefore fit worse, and in the
    # small quick grid they would pull the attention curves away from the other designs.
    shapes = [
        LayerShape(design, width, phase, context)
        for design, width in product(DESIGNS, CALIBRATION_WIDTHS)
        for phase, contexts in (("prefill", CALIBRATION_PREFILL), ("decode", CALIBRATION_DECODE))
        for context in contexts
    ]
    return shapes + [LayerShape(design, 512, "prefill", 4096, chunk=1024) for design in QUICK_DESIGNS]


def _tiny_grid() -> list[LayerShape]:
    return [
        LayerShape("gqa", 128, "prefill", 128),
        LayerShape("gqa", 256, "decode", 512),
        LayerShape("dsa", 256, "prefill", 256),
        LayerShape("dsa", 128, "decode", 1024),
        LayerShape("msa", 128, "prefill", 128),
        LayerShape("msa", 256, "decode", 512),
    ]


GRIDS = ("tiny", "quick", "full")


def calibration_grid(name: str) -> list[LayerShape]:
    """Return the layer runs that a calibration of grid ``name`` times."""
    if name == "tiny":
        return _tiny_grid()
    if name == "quick":
        return _quick_grid()
    if name == "full":
        return _full_grid()
    raise SpecError(f"unknown grid '{name}': use one of {', '.join(GRIDS)}")


# Sizes of the probes: a memory copy (elements) and an embedding-row gather (rows).
COPY_ELEMENTS = {"tiny": (1 << 12, 1 << 18), "quick": (1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 25)}
GATHER_ROWS = {"tiny": (16, 256), "quick": (1, 16, 256, 4096)}


def copy_sizes(grid: str) -> tuple[int, ...]:
    return COPY_ELEMENTS["tiny" if grid == "tiny" else "quick"]


def gather_sizes(grid: str) -> tuple[int, ...]:
    return GATHER_ROWS["tiny" if grid == "tiny" else "quick"]


# ---------------------------------------------------------------------------------------------
# Validation cases

VALIDATION_WIDTHS = (384, 640)
VALIDATION_PREFILL = (384, 768, 1536)
VALIDATION_DECODE = (2048, 6144, 16384)
CASE_SETS = ("tiny", "quick", "full")


def validation_cases(name: str) -> list[LayerShape]:
    """Held-out layer runs: widths and context lengths that no calibration grid contains.

    quick runs the four quick designs, each at one of the two widths (alternating); full runs
    every design at both widths, plus chunked prefills.
    """
    if name == "tiny":
        return [LayerShape("gqa", 384, "prefill", 192), LayerShape("dsa", 384, "decode", 768)]
    if name not in CASE_SETS:
        raise SpecError(f"unknown case set '{name}': use one of {', '.join(CASE_SETS)}")
    designs = QUICK_DESIGNS if name == "quick" else DESIGNS
    cases = []
    for i, design in enumerate(designs):
        widths = VALIDATION_WIDTHS if name == "full" else (VALIDATION_WIDTHS[i % 2],)
        for width in widths:
            cases += [LayerShape(design, width, "prefill", n) for n in VALIDATION_PREFILL]
            cases += [LayerShape(design, width, "decode", n) for n in VALIDATION_DECODE]
    if name == "full":
        cases += [LayerShape(design, 640, "prefill", 3072, chunk=768) for design in QUICK_DESIGNS]
    return cases
