#!/bin/sh
# how the team starts the server on a bare-metal box
export HF_HOME=/data/hf
vllm serve meta-llama/Llama-3.1-8B-Instruct \
  --max-num-seqs 256 --max-num-batched-tokens 8192 \
  --enable-chunked-prefill --port 8080 && echo done
