"""Build a tiny, random, offline IndexTTS-2.5 that the real ``indextts25`` code loads unpatched.

    python -m devstack.tiny_model25 OUT_DIR [--hf-home DIR] [--seed N] [--force] [--full-size]

``OUT_DIR`` gets the IndexTTS-2.5 checkpoint layout (``config.yaml``, ``gpt.pth``, ``s2mel.pth``,
``codec.pth``, ``multilingual_zh_ja_yue_char_del.tiktoken``, ``wav2vec2bert_stats.pt``,
``feat1.pt``, ``feat2.pt``) and ``--hf-home`` (default ``OUT_DIR/hf``) gets a Hugging Face cache
holding tiny random versions of the three hub repos ``indextts25`` reads when the model dir has
no ``hf_cache/`` (w2v-BERT 2.0, CAMPPlus, BigVGAN); use it with ``HF_HOME=... HF_HUB_OFFLINE=1``.

The weights are noise, so the audio is not speech, but the file formats, tensor shapes and code
paths are the real ones: the tokenizer is a real tiktoken byte-level BPE (all 256 bytes plus merges
learned from a small zh/en/es/ja/ar corpus, then the Whisper-style special tokens the package
appends, language tokens included); s2mel and BigVGAN are saved in the weight-norm format of the
published checkpoints (built with IndexTTS2's classes, which share the architecture), so
``indextts25`` folds them at load as it does for real weights. Widths the code hard-codes stay
(w2v-BERT 1024 with >= 17 layers, codec features 1024, CAMPPlus 80->192); the rest shrinks, the
GPT to one 64-wide layer. Seeded and idempotent like ``devstack.tiny_model``: a complete build
leaves ``.tiny-model-complete`` and is skipped unless ``--force``.

``--full-size`` uses IndexTTS-2.5's published dimensions where the package fixes them (58 836
BPE ranks + 1 673 specials = 60 509 text tokens, 8 192 codec codes, w2v-BERT layer 17) and
IndexTTS-2's for the rest (GPT 1280 x 24 layers, 20 heads; s2mel DiT 512 x 13; BigVGAN 22 kHz):
random weights, ~4 GB, for the GPU benchmark's compute and memory figures.
"""

from __future__ import annotations

import argparse
import base64
import copy
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devstack.tiny_model import (
    UPSTREAM_BIGVGAN,
    UPSTREAM_CONFIG,
    UPSTREAM_W2V,
    _deep_update,
    _swap_in,
    hub_snapshot_dir,
)

MARKER = ".tiny-model-complete"
BUILD_VERSION = 1  # bump when the layout changes so old builds are rebuilt
TIKTOKEN_FILE = "multilingual_zh_ja_yue_char_del.tiktoken"

# The hub repos indextts25.utils.model_download falls back to, mirrored into the offline cache.
W2V_REPO = "facebook/w2v-bert-2.0"
CAMPPLUS_REPO = "funasr/campplus"
BIGVGAN_REPO = "nvidia/bigvgan_v2_22khz_80band_256x"

EMO_NUM = [3, 17, 2, 8, 4, 5, 10, 24]  # prototypes per emotion, as upstream
FULL_TEXT_TOKENS = 60509  # 58 836 ranks + 1 673 special tokens in the published tokenizer

# Text as the front end hands it to the tokenizer (lower-cased zh/en/ja, upper-cased es, hiragana ja).
CORPUS = [
    "hello world, this is a tiny text to speech model.",
    "the quick brown fox jumps over the lazy dog.",
    "how are you today? i am fine, thank you!",
    "one, two, three, four, five, six, seven, eight, nine, ten.",
    "kafka delivers every request exactly once, and the worker renders it.",
    "HOLA, ¿CÓMO ESTÁS? ESTOY MUY BIEN, GRACIAS.",
    "EL RÁPIDO ZORRO MARRÓN SALTA SOBRE EL PERRO PEREZOSO.",
    "UNO, DOS, TRES, CUATRO, CINCO, SEIS, SIETE, OCHO, NUEVE, DIEZ.",
    "你好,世界.这是一个很小的语音合成模型.",
    "今天天气很好,我们去公园散步吧!",
    "こんにちは、せかい。これはちいさなおんせいごうせいモデルです。",
    "きょうはいいてんきですね。",
    "مرحبا بالعالم، هذا نموذج صغير لتحويل النص إلى كلام.",
    "كيف حالك اليوم؟ أنا بخير، شكرا.",
]

# IndexTTS-2.5's config.yaml keys (indextts25.infer_v2_5 reads them), tiny sizes.
TINY_CONFIG: dict[str, Any] = {
    "gpt": {
        "model_dim": 64,
        "layers": 1,
        "heads": 2,
        "max_mel_tokens": 100,
        "max_text_tokens": 120,
        "number_mel_codes": 66,
        "start_mel_token": 64,
        "stop_mel_token": 65,
        "start_text_token": 0,
        "stop_text_token": 1,
        "emo_condition_module": {
            "output_size": 64,
            "linear_units": 64,
            "attention_heads": 2,
            "num_blocks": 1,
            "input_layer": "conv2d2",
            "perceiver_mult": 1,
        },
    },
    "semantic_codec": {
        "codebook_size": 64,
        "hidden_size": 1024,
        "codebook_dim": 8,
        "vocos_dim": 32,
        "vocos_intermediate_dim": 64,
        "vocos_num_layers": 1,
    },
    "s2mel": _deep_update(
        UPSTREAM_CONFIG["s2mel"],
        {
            "length_regulator": {"channels": 64, "content_codebook_size": 64},
            "DiT": {"hidden_dim": 64, "num_heads": 2, "depth": 2, "content_dim": 64, "content_codebook_size": 64},
            "wavenet": {"hidden_dim": 64, "num_layers": 1},
        },
    ),
    "gpt_checkpoint": "gpt.pth",
    "w2v_stat": "wav2vec2bert_stats.pt",
    "s2mel_checkpoint": "s2mel.pth",
    "emo_matrix": "feat2.pt",
    "spk_matrix": "feat1.pt",
    "emo_num": EMO_NUM,
    "model_type": "indextts2.5-tiny-random",
    "version": "2.5-tiny",
}
FULL_SIZE_PATCH: dict[str, Any] = {
    "gpt": {
        "model_dim": 1280,
        "layers": 24,
        "heads": 20,
        "max_mel_tokens": 1815,
        "max_text_tokens": 600,
        "number_text_tokens": FULL_TEXT_TOKENS,
        "number_mel_codes": 8194,
        "start_mel_token": 8192,
        "stop_mel_token": 8193,
        "emo_condition_module": UPSTREAM_CONFIG["gpt"]["emo_condition_module"],
    },
    "semantic_codec": UPSTREAM_CONFIG["semantic_codec"],
    "s2mel": UPSTREAM_CONFIG["s2mel"],
    "model_type": "indextts2.5-full-random",
    "version": "2.5-full-random",
}
TINY_BIGVGAN_PATCH: dict[str, Any] = {
    "upsample_rates": [8, 8, 4],
    "upsample_kernel_sizes": [16, 16, 8],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
}
TINY_W2V = {"num_hidden_layers": 17, "intermediate_size": 64, "num_attention_heads": 2}


def _seed(seed: int, salt: int) -> None:
    import torch

    torch.manual_seed(seed * 1000 + salt)


def _gpt2_byte_order() -> list[int]:
    """Bytes in GPT-2's rank order: printable ones first, so rank 0 is "!" as in the real vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return printable + [b for b in range(256) if b not in printable]


def train_tiktoken(merges: int = 300) -> dict[bytes, int]:
    """Byte-level BPE ranks: the 256 bytes, then the most frequent adjacent pairs of the corpus, merged in turn."""
    import regex

    # tiktoken's own pre-tokeniser (the one indextts25.utils.tokenizer passes): merges stay inside pieces.
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    ranks = {bytes([b]): rank for rank, b in enumerate(_gpt2_byte_order())}
    words = Counter(
        tuple(bytes([b]) for b in piece.encode()) for line in CORPUS for piece in pattern.findall(line)
    )
    for _ in range(merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        # Deterministic: highest count, then the lexically smallest pair.
        (a, b), count = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        if count < 2:
            break
        ranks[a + b] = len(ranks)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, n in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return ranks


def _write_tiktoken(out: Path) -> int:
    """Write the vocabulary; return the tokenizer's size with the package's special tokens."""
    ranks = train_tiktoken()
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda x: x[1])]
    (out / TIKTOKEN_FILE).write_text("\n".join(lines) + "\n")
    from indextts25.utils.tokenizer import get_encoding

    encoding = get_encoding.__wrapped__("multilingual_zh_ja_yue_char_del", model_dir=str(out))
    return int(encoding.n_vocab)


def _build_gpt(out: Path, cfg: dict[str, Any], seed: int) -> None:
    import torch
    from indextts25.gpt.model_v2 import UnifiedVoice

    _seed(seed, 1)
    gpt = UnifiedVoice(**cfg["gpt"])
    state = gpt.state_dict()
    # The published checkpoint also carries the training-only text head, which the loader skips.
    state["text_head.weight"] = torch.zeros(1, cfg["gpt"]["model_dim"])
    torch.save(state, out / "gpt.pth")


def _build_codec(out: Path, cfg: dict[str, Any], seed: int) -> None:
    import torch
    from indextts25.codec.models import EnhancedCodec

    _seed(seed, 2)
    codec = EnhancedCodec(**cfg["semantic_codec"])
    torch.save({"model": codec.state_dict()}, out / "codec.pth")


def _build_s2mel(out: Path, cfg: dict[str, Any], seed: int) -> None:
    import torch
    from indextts.s2mel.modules.commons import MyModel, recursive_munch

    _seed(seed, 3)
    # IndexTTS2's modules keep weight norm, so the file has weight_g/weight_v like the real one.
    model = MyModel(recursive_munch(cfg["s2mel"]), use_gpt_latent=False)
    net = {key: module.state_dict() for key, module in model.models.items()}
    torch.save({"net": net}, out / "s2mel.pth")


def _build_matrices(out: Path, seed: int, model_dim: int) -> None:
    import torch

    _seed(seed, 4)
    total = sum(EMO_NUM)
    torch.save(torch.randn(total, 192), out / "feat1.pt")  # speaker prototypes (CAMPPlus space)
    torch.save(torch.randn(total, model_dim) * 0.1, out / "feat2.pt")  # emotion prototypes (GPT space)
    torch.save({"mean": torch.randn(1024) * 0.1, "var": torch.rand(1024) + 0.5}, out / "wav2vec2bert_stats.pt")


def _build_w2v(hf_home: Path, sizes: dict[str, Any], seed: int) -> None:
    import torch
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    snap = hub_snapshot_dir(hf_home, W2V_REPO, seed)
    _seed(seed, 5)
    model = Wav2Vec2BertModel(Wav2Vec2BertConfig(**sizes))
    model.to(torch.float32).save_pretrained(str(snap))
    SeamlessM4TFeatureExtractor().save_pretrained(str(snap))


def _build_campplus(hf_home: Path, seed: int) -> None:
    import torch
    from indextts25.s2mel.modules.campplus.DTDNN import CAMPPlus

    snap = hub_snapshot_dir(hf_home, CAMPPLUS_REPO, seed)
    _seed(seed, 6)
    torch.save(CAMPPlus(feat_dim=80, embedding_size=192).state_dict(), snap / "campplus_cn_common.bin")


def _build_bigvgan(hf_home: Path, h: dict[str, Any], seed: int) -> None:
    import torch
    from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
    from indextts.s2mel.modules.bigvgan.env import AttrDict

    snap = hub_snapshot_dir(hf_home, BIGVGAN_REPO, seed)
    _seed(seed, 7)
    model = BigVGAN(AttrDict(h), use_cuda_kernel=False)  # weight-norm format, as published
    torch.save({"generator": model.state_dict()}, snap / "bigvgan_generator.pt")
    (snap / "config.json").write_text(json.dumps(h, indent=2))


def model_config(number_text_tokens: int, *, full_size: bool = False) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["gpt"]["number_text_tokens"] = number_text_tokens
    if full_size:
        cfg = _deep_update(cfg, FULL_SIZE_PATCH)
    return cfg


def is_complete(out_dir: Path, hf_home: Path, seed: int, size: str = "tiny") -> bool:
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        return False
    return bool(
        info.get("builder") == "devstack.tiny_model25"
        and info.get("build_version") == BUILD_VERSION
        and info.get("seed") == seed
        and info.get("size") == size
        and Path(info.get("hf_home", "")).resolve() == hf_home.resolve()
        and (hf_home / "hub").is_dir()
    )


def build(
    out_dir: Path | str,
    hf_home: Path | str | None = None,
    *,
    seed: int = 1234,
    force: bool = False,
    full_size: bool = False,
) -> Path:
    """Build the model into ``out_dir`` (and its hub cache into ``hf_home``); return ``out_dir``."""
    import yaml

    out = Path(out_dir)
    hf = Path(hf_home) if hf_home is not None else out / "hf"
    size = "full" if full_size else "tiny"
    if not force and is_complete(out, hf, seed, size):
        return out
    started = time.perf_counter()
    # Build into a sibling temp dir and swap in, so an interrupted build never looks complete.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    hf_inside = hf.resolve() == (out / "hf").resolve()
    if hf_inside:
        hf_build = tmp / "hf"
    else:
        hf.parent.mkdir(parents=True, exist_ok=True)
        hf_build = Path(tempfile.mkdtemp(prefix=f".{hf.name}.", dir=hf.parent))
    try:
        cfg = model_config(_write_tiktoken(tmp), full_size=full_size)
        cfg["tiny_random"] = {"seed": seed, "size": size, "builder": "devstack.tiny_model25",
                              "build_version": BUILD_VERSION}
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        _build_gpt(tmp, cfg, seed)
        _build_codec(tmp, cfg, seed)
        _build_s2mel(tmp, cfg, seed)
        _build_matrices(tmp, seed, cfg["gpt"]["model_dim"])
        _build_w2v(hf_build, UPSTREAM_W2V if full_size else TINY_W2V, seed)
        _build_campplus(hf_build, seed)
        _build_bigvgan(hf_build, UPSTREAM_BIGVGAN if full_size else _deep_update(UPSTREAM_BIGVGAN, TINY_BIGVGAN_PATCH),
                       seed)
        if not hf_inside:
            _swap_in(hf_build, hf)
        marker = {
            "builder": "devstack.tiny_model25",
            "build_version": BUILD_VERSION,
            "seed": seed,
            "size": size,
            "hf_home": str(hf.resolve()),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))  # last: an interrupted build is never complete
        _swap_in(tmp, out)
    finally:
        for leftover in (tmp, hf_build):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hf-home", type=Path, default=None, help="hub cache dir (default OUT_DIR/hf)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    parser.add_argument("--full-size", action="store_true", help="published dimensions (~4 GB), for benchmarks")
    args = parser.parse_args(argv)
    hf = args.hf_home if args.hf_home is not None else args.out_dir / "hf"
    size = "full" if args.full_size else "tiny"
    if not args.force and is_complete(args.out_dir, hf, args.seed, size):
        print(f"{size} IndexTTS-2.5 model already complete in {args.out_dir}")
        return 0
    started = time.perf_counter()
    build(args.out_dir, hf, seed=args.seed, force=args.force, full_size=args.full_size)
    print(f"built {size} IndexTTS-2.5 model in {args.out_dir} (hub cache {hf}) in {time.perf_counter() - started:.1f}s")
    print(f"use with: HF_HOME={hf} HF_HUB_OFFLINE=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
