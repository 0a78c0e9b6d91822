"""Writes tiny random T5 / UMT5 checkpoints and PyTorch outputs for test_t5.py's parity checks.

The reference is transformers' PyTorch `T5EncoderModel` (T5 v1.1 layout:
gated-GELU, relative position bias in layer 0 only) and `UMT5EncoderModel`
(a bias in every layer), with small random weights from a fixed torch seed.
Each model is saved the way Hugging Face folders ship it (config.json,
model.safetensors, tokenizer.json + tokenizer_config.json), so the Flax
encoder reads exactly what it would read for t5-v1_1-xxl or umt5-xxl. The
tokenizer is a tiny word-level one built here (T5's special tokens: <pad>=0,
</s>=1 appended to every text, <unk>=2). torch is kept out of the project
venv, so this ran in its own:

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy
    /work/refvenv/bin/python tests/reference/make_t5_reference.py

(torch 2.13.0+cpu, transformers 5.23.0). Outputs: tests/reference/t5_tiny/,
tests/reference/umt5_tiny/ and tests/reference/t5_reference.npz (float32
hidden states, int32 ids, bool masks, int64 buckets).
"""

import argparse
import os

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = (
    "a red green blue yellow circle square triangle moves moving left right up down "
    "slowly quickly large small the and bounces"
).split()
TEXTS = [
    "a red circle moving left",
    "the large blue square moves up slowly and the small green triangle bounces right",
    "a purple star",  # "purple" and "star" are not in the vocabulary: <unk>
    "",
]
TEXT_MAX_LENGTH = 8
SEQ_LENGTH = 16
VOCAB_SIZE = 100
# d_kv * num_heads (24) differs from d_model (32), so a transposed projection cannot pass.
COMMON = dict(vocab_size=VOCAB_SIZE, d_model=32, d_kv=6, d_ff=48, num_heads=4,
              feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
              pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
# T5 with few buckets and a short max_distance, so 16 tokens reach the clamped buckets.
T5_CONFIG = dict(COMMON, num_layers=3, relative_attention_num_buckets=8,
                 relative_attention_max_distance=12)
UMT5_CONFIG = dict(COMMON, num_layers=2, relative_attention_num_buckets=32,
                   relative_attention_max_distance=128)
BUCKET_SETTINGS = ((32, 128), (8, 12))  # (num_buckets, max_distance)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with T5's special tokens and its `</s>` post-processor."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=512,
    )


def build_model(model_cls, config, seed: int):
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # HF's init leaves the norms at 1 and some weights tiny; perturb every tensor so
    # that each one (norm scales and position biases included) moves the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def buckets_from_torch(relative_position: torch.Tensor, num_buckets: int, max_distance: int):
    from transformers.models.t5.modeling_t5 import T5Attention
    return T5Attention._relative_position_bucket(
        relative_position, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=HERE)
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    # Fixed ids with padding: full, 5 real tokens, 1 real token; ids avoid <pad>/</s>.
    gen = np.random.default_rng(0)
    ids = gen.integers(3, VOCAB_SIZE, size=(3, SEQ_LENGTH)).astype(np.int64)
    lengths = np.array([SEQ_LENGTH, 5, 1])
    mask = np.arange(SEQ_LENGTH)[None] < lengths[:, None]
    ids = np.where(mask, ids, 0)
    results = {
        "input_ids": ids.astype(np.int32),
        "attention_mask": mask,
        "texts": np.array(TEXTS),
    }

    for name, model_cls, config_cls, raw, seed in (
        ("t5", T5EncoderModel, T5Config, T5_CONFIG, 1),
        ("umt5", UMT5EncoderModel, UMT5Config, UMT5_CONFIG, 2),
    ):
        config = config_cls(**raw)
        config._attn_implementation = "eager"
        model = build_model(model_cls, config, seed)
        folder = os.path.join(args.out_dir, f"{name}_tiny")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        reloaded = AutoTokenizer.from_pretrained(folder)
        batch = reloaded(TEXTS, padding="max_length", truncation=True,
                         max_length=TEXT_MAX_LENGTH, return_tensors="np")
        as_torch = lambda a: torch.from_numpy(np.asarray(a, np.int64))
        with torch.no_grad():
            hidden = model(input_ids=as_torch(ids), attention_mask=as_torch(mask)).last_hidden_state
            text_hidden = model(input_ids=as_torch(batch["input_ids"]),
                                attention_mask=as_torch(batch["attention_mask"])).last_hidden_state
        results[f"{name}_last_hidden_state"] = hidden.numpy().astype(np.float32)  # [3, 16, 32]
        results["text_input_ids"] = batch["input_ids"].astype(np.int32)  # the same for both
        results["text_attention_mask"] = batch["attention_mask"].astype(bool)
        results[f"{name}_text_last_hidden_state"] = text_hidden.numpy().astype(np.float32)
        sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
        print(f"wrote {folder}: {sizes}")

    relative = torch.arange(-600, 601)
    results["bucket_relative_position"] = relative.numpy()
    for num_buckets, max_distance in BUCKET_SETTINGS:
        results[f"buckets_{num_buckets}_{max_distance}"] = buckets_from_torch(
            relative, num_buckets, max_distance).numpy()

    out = os.path.join(args.out_dir, "t5_reference.npz")
    np.savez(out, **results)
    print(f"wrote {out}: text ids {results['text_input_ids'].tolist()}")


if __name__ == "__main__":
    main()
