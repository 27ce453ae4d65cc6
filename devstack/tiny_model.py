"""Build a tiny, random, offline IndexTTS2 that the real ``indextts`` code loads unpatched.

    python -m devstack.tiny_model OUT_DIR [--hf-home DIR] [--seed N] [--force] [--full-size]

``OUT_DIR`` gets the upstream checkpoint layout (``config.yaml``, ``gpt.pth``, ``s2mel.pth``,
``bpe.model``, ``wav2vec2bert_stats.pt``, ``feat1.pt``, ``feat2.pt``, ``qwen0.6bemo4-merge/``) and
``--hf-home`` (default ``OUT_DIR/hf``) gets a Hugging Face cache holding tiny random versions of
the four hub repos ``IndexTTS2`` fetches, to be used with ``HF_HOME=... HF_HUB_OFFLINE=1``.

The weights are noise: the audio is not speech, but every tensor shape, file format, code path
and timing structure is the real one. Dimensions the code hard-codes are kept (GPT width 1280,
w2v-BERT width 1024 with >= 17 layers, CAMPPlus 80->192, 73 emotion prototypes); everything
else is shrunk. The build is seeded (same seed -> same weights) and idempotent: a completed
build leaves ``.tiny-model-complete`` and is skipped next time unless ``--force``.

``--full-size`` keeps the upstream IndexTTS-2 dimensions instead (random weights, ~5 GB): the GPU
benchmark's model, with real compute and memory cost.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MARKER = ".tiny-model-complete"
BUILD_VERSION = 1  # bump when the layout changes so old builds are rebuilt

# Hub repos infer_v2 downloads, mirrored into the offline cache.
W2V_REPO = "facebook/w2v-bert-2.0"
MASKGCT_REPO = "amphion/MaskGCT"
CAMPPLUS_REPO = "funasr/campplus"
BIGVGAN_REPO = "nvidia/bigvgan_v2_22khz_80band_256x"

EMO_NUM = [3, 17, 2, 8, 4, 5, 10, 24]  # prototypes per emotion, as upstream
QWEN_DIR = "qwen0.6bemo4-merge"

# A small zh+en corpus for the BPE model, with ASCII punctuation as IndexTTS's normaliser leaves it;
# it is upper-cased and CJK-spaced (the model's own pre-tokeniser) before training.
CORPUS = [
    "Hello world, this is a tiny text to speech model.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "How are you today? I am fine, thank you!",
    "Kafka delivers every request exactly once, and the worker renders it.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "Eleven, twelve, twenty, thirty, forty, fifty, hundred, thousand, million.",
    "Please leave a message after the tone.",
    "What's the weather like in Beijing and Shanghai?",
    "It is a truth universally acknowledged that a speech model needs data.",
    "Good morning, good afternoon, good evening and good night.",
    "I love music, movies, books, coffee and long walks.",
    "This sentence is happy. That one is sad. Another one is angry!",
    "Are you afraid of the dark? No, I am calm and surprised.",
    "The processor consumes requests, synthesizes audio and uploads results.",
    "Zero point five seconds of silence between segments.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday.",
    "January, February, March, April, May, June, July, August.",
    "你好,世界.这是一个很小的语音合成模型.",
    "今天天气很好,我们去公园散步吧!",
    "欢迎使用语音合成服务,请稍候.",
    "他高兴地笑了,她却有点悲伤.",
    "我们在北京和上海都有办公室.",
    "一二三四五六七八九十,百千万亿.",
    "请在提示音后留言,谢谢.",
    "这个模型的权重是随机的,所以声音不是真正的语音.",
    "春天来了,花开了,鸟儿在唱歌.",
    "你为什么这么生气?我很惊讶,也有点害怕.",
    "每一个请求都会被处理,然后上传到存储.",
    "时间就是金钱,效率就是生命.",
    "我爱中文,也爱英文.中英文混合也可以.",
    "零点五秒的静音插在两个片段之间.",
]

# Upstream IndexTTS-2 config.yaml (checkpoints/config.yaml), minus what the tiny build overrides.
UPSTREAM_CONFIG: dict[str, Any] = {
    "dataset": {
        "bpe_model": "bpe.model",
        "sample_rate": 24000,
        "squeeze": False,
        "mel": {
            "sample_rate": 24000,
            "n_fft": 2048,
            "hop_length": 256,
            "win_length": 2048,
            "n_mels": 1024,
            "mel_fmin": 0,
            "normalize": False,
        },
    },
    "gpt": {
        "model_dim": 1280,
        "max_mel_tokens": 1815,
        "max_text_tokens": 600,
        "heads": 20,
        "use_mel_codes_as_input": True,
        "mel_length_compression": 1024,
        "layers": 24,
        "number_text_tokens": 12000,
        "number_mel_codes": 8194,
        "start_mel_token": 8192,
        "stop_mel_token": 8193,
        "start_text_token": 0,
        "stop_text_token": 1,
        "train_solo_embeddings": False,
        "condition_type": "conformer_perceiver",
        "condition_module": {
            "output_size": 512,
            "linear_units": 2048,
            "attention_heads": 8,
            "num_blocks": 6,
            "input_layer": "conv2d2",
            "perceiver_mult": 2,
        },
        "emo_condition_module": {
            "output_size": 512,
            "linear_units": 1024,
            "attention_heads": 4,
            "num_blocks": 4,
            "input_layer": "conv2d2",
            "perceiver_mult": 2,
        },
    },
    "semantic_codec": {
        "codebook_size": 8192,
        "hidden_size": 1024,
        "codebook_dim": 8,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 12,
    },
    "s2mel": {
        "preprocess_params": {
            "sr": 22050,
            "spect_params": {
                "n_fft": 1024,
                "win_length": 1024,
                "hop_length": 256,
                "n_mels": 80,
                "fmin": 0,
                "fmax": "None",
            },
        },
        "dit_type": "DiT",
        "reg_loss_type": "l1",
        "style_encoder": {"dim": 192},
        "length_regulator": {
            "channels": 512,
            "is_discrete": False,
            "in_channels": 1024,
            "content_codebook_size": 2048,
            "sampling_ratios": [1, 1, 1, 1],
            "vector_quantize": False,
            "n_codebooks": 1,
            "quantizer_dropout": 0.0,
            "f0_condition": False,
            "n_f0_bins": 512,
        },
        "DiT": {
            "hidden_dim": 512,
            "num_heads": 8,
            "depth": 13,
            "class_dropout_prob": 0.1,
            "block_size": 8192,
            "in_channels": 80,
            "style_condition": True,
            "final_layer_type": "wavenet",
            "target": "mel",
            "content_dim": 512,
            "content_codebook_size": 1024,
            "content_type": "discrete",
            "f0_condition": False,
            "n_f0_bins": 512,
            "content_codebooks": 1,
            "is_causal": False,
            "long_skip_connection": True,
            "zero_prompt_speech_token": False,
            "time_as_token": False,
            "style_as_token": False,
            "uvit_skip_connection": True,
            "add_resblock_in_transformer": False,
        },
        "wavenet": {
            "hidden_dim": 512,
            "num_layers": 8,
            "kernel_size": 5,
            "dilation_rate": 1,
            "p_dropout": 0.2,
            "style_condition": True,
        },
    },
    "gpt_checkpoint": "gpt.pth",
    "w2v_stat": "wav2vec2bert_stats.pt",
    "s2mel_checkpoint": "s2mel.pth",
    "emo_matrix": "feat2.pt",
    "spk_matrix": "feat1.pt",
    "emo_num": EMO_NUM,
    "qwen_emo_path": f"{QWEN_DIR}/",
    "vocoder": {"type": "bigvgan", "name": BIGVGAN_REPO},
    "version": 2.0,
}

# Upstream nvidia/bigvgan_v2_22khz_80band_256x generator hyper-parameters (inference subset).
UPSTREAM_BIGVGAN: dict[str, Any] = {
    "resblock": "1",
    "upsample_rates": [4, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
    "activation": "snakebeta",
    "snake_logscale": True,
    "num_mels": 80,
    "n_fft": 1024,
    "hop_size": 256,
    "win_size": 1024,
    "sampling_rate": 22050,
    "fmin": 0,
    "fmax": None,
    "fmax_for_loss": None,
}

# Upstream facebook/w2v-bert-2.0 sizes that differ from the tiny ones.
UPSTREAM_W2V = {"num_hidden_layers": 24, "intermediate_size": 4096, "num_attention_heads": 16}


def _deep_update(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


# What the tiny build shrinks. Widths the code hard-codes (GPT 1280, w2v 1024, style 192) stay.
TINY_PATCH: dict[str, Any] = {
    "gpt": {
        "max_mel_tokens": 100,
        "layers": 1,
        "heads": 4,
        "condition_module": {
            "output_size": 64,
            "linear_units": 64,
            "attention_heads": 2,
            "num_blocks": 1,
            "perceiver_mult": 1,
        },
        "emo_condition_module": {
            "output_size": 64,
            "linear_units": 64,
            "attention_heads": 2,
            "num_blocks": 1,
            "perceiver_mult": 1,
        },
    },
    "semantic_codec": {
        "codebook_size": 1024,
        "vocos_dim": 32,
        "vocos_intermediate_dim": 64,
        "vocos_num_layers": 1,
    },
    "s2mel": {
        "length_regulator": {"channels": 64, "content_codebook_size": 64},
        "DiT": {"hidden_dim": 64, "num_heads": 2, "depth": 2, "content_dim": 64, "content_codebook_size": 64},
        "wavenet": {"hidden_dim": 64, "num_layers": 1},
    },
}
TINY_BIGVGAN_PATCH: dict[str, Any] = {
    "upsample_rates": [8, 8, 4],
    "upsample_kernel_sizes": [16, 16, 8],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
}
TINY_W2V = {"num_hidden_layers": 17, "intermediate_size": 64, "num_attention_heads": 2}
# The upstream sizes again, for the full-size random model (GPU benchmark).
FULL_SIZE_PATCH: dict[str, Any] = {
    "gpt": UPSTREAM_CONFIG["gpt"],
    "semantic_codec": UPSTREAM_CONFIG["semantic_codec"],
    "s2mel": UPSTREAM_CONFIG["s2mel"],
    "model_type": "indextts2-full-random",
    "version": "2.0-full-random",
}


def _fake_commit(repo_id: str, seed: int) -> str:
    return hashlib.sha1(f"tiny:{repo_id}:{seed}:{BUILD_VERSION}".encode()).hexdigest()  # noqa: S324 (a fake git commit id for the hub cache layout, not security)


def hub_snapshot_dir(hf_home: Path, repo_id: str, seed: int) -> Path:
    """Create the offline hub-cache layout (refs/main -> snapshots/<commit>) and return the snapshot."""
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = _fake_commit(repo_id, seed)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _seed(seed: int, salt: int) -> None:
    import torch

    torch.manual_seed(seed * 1000 + salt)


def _train_bpe(out: Path, seed: int) -> int:
    """Train a small sentencepiece BPE on the built-in corpus; return its vocabulary size."""
    import sentencepiece as spm
    from indextts.utils.common import tokenize_by_CJK_char

    lines = [tokenize_by_CJK_char(s) for s in CORPUS]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=1024,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,  # any text tokenises without <unk>, like the real 12k vocab mostly does
        bos_id=0,
        eos_id=1,
        unk_id=2,
        pad_id=-1,
        num_threads=1,
        seed_sentencepiece_size=10000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    (out / "bpe.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return int(sp.GetPieceSize())


def _build_gpt(out: Path, cfg: dict[str, Any], seed: int) -> None:
    import torch
    from indextts.gpt.model_v2 import UnifiedVoice

    _seed(seed, 1)
    gpt = UnifiedVoice(**cfg["gpt"])
    torch.save(gpt.state_dict(), out / "gpt.pth")


def _build_s2mel(out: Path, cfg: dict[str, Any], seed: int) -> None:
    import torch
    from indextts.s2mel.modules.commons import MyModel, recursive_munch

    _seed(seed, 2)
    model = MyModel(recursive_munch(cfg["s2mel"]), use_gpt_latent=True)
    net = {key: module.state_dict() for key, module in model.models.items()}
    torch.save({"net": net}, out / "s2mel.pth")


def _build_matrices(out: Path, seed: int, model_dim: int) -> None:
    import torch

    _seed(seed, 3)
    total = sum(EMO_NUM)
    torch.save(torch.randn(total, 192), out / "feat1.pt")  # speaker prototypes (CAMPPlus space)
    torch.save(torch.randn(total, model_dim) * 0.1, out / "feat2.pt")  # emotion prototypes (GPT space)
    torch.save({"mean": torch.randn(1024) * 0.1, "var": torch.rand(1024) + 0.5}, out / "wav2vec2bert_stats.pt")


def _build_qwen_emotion(out: Path, seed: int) -> None:
    """A tiny causal LM + tokenizer with the chat template QwenEmotion applies.

    Its final norm is zeroed so every logit is 0 and greedy decoding picks token 0, which is
    <|im_end|> (EOS): the classifier answers "" at once, which QwenEmotion maps to "calm".
    Random weights would instead babble up to its 32768-token limit.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from tokenizers import decoders as tk_decoders
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    target = out / QWEN_DIR
    target.mkdir(parents=True, exist_ok=True)
    specials = ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk_decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*CORPUS, "文本情感分类", "system user assistant"], trainer=trainer)
    chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # noqa: S106 (tokenizer special tokens, not passwords)
        pad_token="<|endoftext|>",  # noqa: S106 (tokenizer special tokens, not passwords)
        chat_template=chat_template,
    )
    hf_tok.save_pretrained(str(target))

    _seed(seed, 4)
    config = Qwen3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=hf_tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id
    )
    model.save_pretrained(str(target))


def _build_w2v(hf_home: Path, sizes: dict[str, Any], seed: int) -> None:
    import torch
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    snap = hub_snapshot_dir(hf_home, W2V_REPO, seed)
    _seed(seed, 5)
    model = Wav2Vec2BertModel(Wav2Vec2BertConfig(**sizes))
    # fp32 on disk: the loader keeps the stored dtype and the feature extractor feeds fp32.
    model.to(torch.float32).save_pretrained(str(snap))
    SeamlessM4TFeatureExtractor().save_pretrained(str(snap))


def _build_maskgct(hf_home: Path, cfg: dict[str, Any], seed: int) -> None:
    import safetensors.torch
    from indextts.utils.maskgct_utils import build_semantic_codec
    from omegaconf import OmegaConf

    snap = hub_snapshot_dir(hf_home, MASKGCT_REPO, seed)
    (snap / "semantic_codec").mkdir(parents=True, exist_ok=True)
    _seed(seed, 6)
    codec = build_semantic_codec(OmegaConf.create(cfg["semantic_codec"]))
    safetensors.torch.save_model(codec, str(snap / "semantic_codec" / "model.safetensors"))


def _build_campplus(hf_home: Path, seed: int) -> None:
    import torch
    from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus

    snap = hub_snapshot_dir(hf_home, CAMPPLUS_REPO, seed)
    _seed(seed, 7)
    torch.save(CAMPPlus(feat_dim=80, embedding_size=192).state_dict(), snap / "campplus_cn_common.bin")


def _build_bigvgan(hf_home: Path, h: dict[str, Any], seed: int) -> None:
    import torch
    from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
    from indextts.s2mel.modules.bigvgan.env import AttrDict

    snap = hub_snapshot_dir(hf_home, BIGVGAN_REPO, seed)
    _seed(seed, 8)
    model = BigVGAN(AttrDict(h), use_cuda_kernel=False)
    torch.save({"generator": model.state_dict()}, snap / "bigvgan_generator.pt")
    (snap / "config.json").write_text(json.dumps(h, indent=2))


def tiny_config(number_text_tokens: int) -> dict[str, Any]:
    cfg = _deep_update(UPSTREAM_CONFIG, TINY_PATCH)
    cfg["gpt"]["number_text_tokens"] = number_text_tokens
    # The mel vocabulary follows the (shrunk) codec: codes 0..N-1, then start and stop.
    n = cfg["semantic_codec"]["codebook_size"]
    cfg["gpt"].update(number_mel_codes=n + 2, start_mel_token=n, stop_mel_token=n + 1)
    cfg["model_type"] = "indextts2-tiny-random"
    cfg["version"] = "2.0-tiny"
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
        info.get("build_version") == BUILD_VERSION
        and info.get("seed") == seed
        and info.get("size", "tiny") == size
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
    """Build the model into ``out_dir`` (and its hub cache into ``hf_home``); return ``out_dir``.

    ``full_size`` keeps every upstream dimension (IndexTTS-2's GPT, s2mel, codec, w2v-BERT and
    BigVGAN; ~5 GB of random fp32 weights) for speed and memory benchmarks; only the BPE
    vocabulary and the emotion-classifier LM stay tiny.
    """
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
        number_text_tokens = _train_bpe(tmp, seed)
        cfg = tiny_config(number_text_tokens)
        if full_size:
            cfg = _deep_update(cfg, FULL_SIZE_PATCH)
        bigvgan_h = UPSTREAM_BIGVGAN if full_size else _deep_update(UPSTREAM_BIGVGAN, TINY_BIGVGAN_PATCH)
        cfg["tiny_random"] = {
            "seed": seed,
            "size": size,
            "builder": "devstack.tiny_model",
            "build_version": BUILD_VERSION,
        }
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        _build_gpt(tmp, cfg, seed)
        _build_s2mel(tmp, cfg, seed)
        _build_matrices(tmp, seed, cfg["gpt"]["model_dim"])
        _build_qwen_emotion(tmp, seed)
        _build_w2v(hf_build, UPSTREAM_W2V if full_size else TINY_W2V, seed)
        _build_maskgct(hf_build, cfg, seed)
        _build_campplus(hf_build, seed)
        _build_bigvgan(hf_build, bigvgan_h, seed)
        if not hf_inside:
            _swap_in(hf_build, hf)
        marker = {
            "build_version": BUILD_VERSION,
            "seed": seed,
            "size": size,
            "hf_home": str(hf.resolve()),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        # The marker is written last, so an interrupted build is never taken as complete.
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        _swap_in(tmp, out)
    finally:
        for leftover in (tmp, hf_build):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return out


def _swap_in(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hf-home", type=Path, default=None, help="hub cache dir (default OUT_DIR/hf)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    parser.add_argument("--full-size", action="store_true", help="upstream dimensions (~5 GB), for benchmarks")
    args = parser.parse_args(argv)
    hf = args.hf_home if args.hf_home is not None else args.out_dir / "hf"
    size = "full" if args.full_size else "tiny"
    if not args.force and is_complete(args.out_dir, hf, args.seed, size):
        print(f"{size} model already complete in {args.out_dir}")
        return 0
    started = time.perf_counter()
    build(args.out_dir, hf, seed=args.seed, force=args.force, full_size=args.full_size)
    print(f"built {size} model in {args.out_dir} (hub cache {hf}) in {time.perf_counter() - started:.1f}s")
    print(f"use with: HF_HOME={hf} HF_HUB_OFFLINE=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
