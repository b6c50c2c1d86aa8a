"""DVC stage `train_aligner`: contrastive W-image aligner -> clcae/pipeline/train_aligner.py.

Multi-GPU: torchrun --nproc_per_node 8 stages/train_aligner.py
"""
from clcae.pipeline import stage_main
from clcae.pipeline.train_aligner import run

if __name__ == "__main__":
    stage_main(run)
