"""`python -m bench.colbert_folder OUT [--model-dir DIR]`: a model folder with a ColBERT head, for measuring
/v1/multi-vector where bge-m3 itself cannot be downloaded (no model hub here).

The folder's files are linked from DIR (default: the bundled MiniLM) and a random Linear(hidden, hidden)
`colbert_linear.pt` is added, the shape of bge-m3's own (1024 -> 1024 there). Its rows mean nothing, its cost is
a real head's: what the multi-vector contenders measure against dense on the same encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.ceiling import default_model_dir


def colbert_folder(model_dir: str | Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig

    out.mkdir(parents=True, exist_ok=True)
    source = Path(model_dir).resolve()
    for path in source.rglob("*"):
        target = out / path.relative_to(source)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif not target.exists():
            target.symlink_to(path)
    hidden = AutoConfig.from_pretrained(source).hidden_size
    torch.manual_seed(0)
    head = out / "colbert_linear.pt"
    head.unlink(missing_ok=True)
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), head)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.colbert_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model-dir", default=None, help="default: the bundled MiniLM")
    args = parser.parse_args()
    print(colbert_folder(args.model_dir or default_model_dir(), args.out))


if __name__ == "__main__":
    main()
