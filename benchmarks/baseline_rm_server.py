"""The serving baseline for bench_serve, written like the original WildReward ``deploy_rm/serve_rank.py``: a FastAPI
worker that scores each request on its own, in fixed chunks of 16 padded to the longest, inside an ``async def``
handler (the blocking forward pass holds the event loop, so requests run one at a time), with no cross-request
batching. Same protocol (``POST /get_reward {"query": [...]}``) and same readout (1 + sum of sigmoids).

    MODEL_PATH=/path/to/exported/rm [DEVICE=cuda] python -m uvicorn benchmarks.baseline_rm_server:app --port 8001

On CUDA the model runs in bf16, as the original served it.

FOR BENCHMARKS ONLY: it keeps the original's flaws on purpose (it is what we measure against).
"""
import os

import torch
from fastapi import FastAPI
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MODEL_PATH = os.environ["MODEL_PATH"]
MAX_LENGTH = int(os.environ.get("MAX_LENGTH", "512"))
DEVICE = os.environ.get("DEVICE", "cpu")
CHUNK = 16

tokenizer = AutoTokenizer.from_pretrained(MODEL_PATH)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForSequenceClassification.from_pretrained(
    MODEL_PATH, use_safetensors=True, dtype=torch.bfloat16 if DEVICE == "cuda" else torch.float32).eval().to(DEVICE)
app = FastAPI()


@app.get("/")
async def health() -> dict:
    return {"status": "ok", "torch_threads": torch.get_num_threads()}


@app.post("/get_reward")
async def get_reward(body: dict) -> dict:
    texts = body["query"]
    rewards = []
    for start in range(0, len(texts), CHUNK):
        enc = tokenizer(texts[start:start + CHUNK], padding=True, truncation=True, max_length=MAX_LENGTH,
                        return_tensors="pt").to(DEVICE)
        with torch.no_grad():
            logits = model(**enc).logits
        rewards += (1 + torch.sigmoid(logits.float()).sum(-1)).tolist()  # .tolist() waits for the GPU
    return {"rewards": rewards}
