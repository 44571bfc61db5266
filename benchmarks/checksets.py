"""Check datasets (esol.data.checksets): generate them, write a config, measure the classifier.

    # a check set in the VOC layout (needs scikit-image: pip install 'esol-wsss[checks]')
    python benchmarks/checksets.py generate shapes /data/check_shapes --train 400 --val 120
    # a whole config for it: config/config.yaml with only the dataset section changed
    python benchmarks/checksets.py config /data/check_shapes config/check_shapes.yaml
    snakemake --cores 2 --configfile config/check_shapes.yaml results/check_shapes/seeds/table6.md
    # one classifier run with overrides, its learning figures and wall time as one JSON line
    python benchmarks/checksets.py classifier config/check_shapes.yaml --out runs.jsonl \\
        --set classifier.lr=0.1 classifier.warmup_steps=50

``classifier`` runs the library's classifier stage (esol.stages.train_classifier) with
the learning check logged but not enforced, so a run that learns nothing still reports
its figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from esol.data import checksets  # noqa: E402


def _generate(args: argparse.Namespace) -> None:
    names = checksets.generate(args.root, args.kind, {"train_aug": args.train, "train": args.train,
                                                      "val": args.val},
                               size=tuple(args.size), seed=args.seed)
    print(f"{args.root}: {args.kind}, classes {names}")


def _config(args: argparse.Namespace) -> None:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    root = Path(args.root).resolve()
    names = (root / "classes.txt").read_text().split()
    cfg["dataset"].update(name=args.name or root.name, source="voc", root=str(root), classes=names,
                          splits=["train_aug", "train", "val"], test_splits=[], train_split="train_aug",
                          seed_split="train")
    Path(args.out).write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"wrote {args.out} (dataset.name {cfg['dataset']['name']})")


def _set(cfg: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node[k]
    node[last] = yaml.safe_load(value)


def _classifier(args: argparse.Namespace) -> None:
    import torch

    from esol.data.voc import prepare_dataset
    from esol.engine import load_checkpoint
    from esol.stages import train_classifier

    cfg = yaml.safe_load(Path(args.config).read_text())
    for a in args.set or []:
        _set(cfg, a)
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("checks", {})["enabled"] = False
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    d = cfg["dataset"]
    dataset_json = work / "dataset.json"
    if not dataset_json.is_file():
        prepare_dataset(d["root"], d["classes"], d["splits"]).to_json(dataset_json)
    torch.set_num_threads(args.threads)
    model = work / "classifier.pt"
    model.unlink(missing_ok=True)
    start = time.time()
    history = train_classifier(cfg, dataset_json, model, work / "classifier_history.csv")
    wall = time.time() - start
    learned = load_checkpoint(model)["learning"]
    row = {"set": args.set or [], "dataset": d["name"], "wall_s": round(wall, 1),
           "steps": history[-1]["step"] if history else 0,
           **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in learned.items()},
           "final_train_loss": round(history[-1]["loss"], 4) if history else None}
    print(json.dumps(row))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


def _probe(args: argparse.Namespace) -> None:
    """Linear probe: logistic regression on frozen global-average-pooled backbone features,
    trained on the training ids not held aside, scored (mAP) on the held-aside ones."""
    import numpy as np
    import torch

    from esol.data import transforms as T
    from esol.data.voc import prepare_dataset, read_image
    from esol.learning import classifier_figures
    from esol.models.backbones import build_backbone
    from esol.stages import holdout_ids

    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    d = cfg["dataset"]
    info = prepare_dataset(d["root"], d["classes"], ["train_aug"])
    ids = info.labelled_ids("train_aug")
    held = set(holdout_ids(ids, args.holdout, cfg["seed"]))
    labels = np.stack([info.label_vector("train_aug", i) for i in ids])
    for spec in args.backbones:
        name, pretrained = spec.split(":")
        torch.manual_seed(0)
        kw = {"depth": 18} if name == "resnet" else {}
        net = build_backbone(name, pretrained=pretrained, **kw).eval()
        start = time.time()
        with torch.no_grad():
            feats = np.stack([net(torch.from_numpy(T.to_chw(T.normalize(
                read_image(info.layout.image(i)))))[None]).mean((2, 3))[0].numpy() for i in ids])
        train = np.array([i not in held for i in ids])
        mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-6
        x = torch.from_numpy((feats - mu) / sd).float()
        y = torch.from_numpy(labels).float()
        lin = torch.nn.Linear(x.shape[1], y.shape[1])
        opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(500):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(lin(x[train]), y[train]).backward()
            opt.step()
        with torch.no_grad():
            figs = classifier_figures(lin(x[~train]).numpy(), labels[~train], info.classes)
        row = {"probe": spec, "dataset": d["name"], "train": int(train.sum()), "holdout": int((~train).sum()),
               "map": round(figs["map"], 4), "prior_map": round(figs["prior_map"], 4),
               "loss": round(figs["loss"], 4), "prior_loss": round(figs["prior_loss"], 4),
               "features_s": round(time.time() - start, 1)}
        print(json.dumps(row))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write a check set in the VOC layout")
    g.add_argument("kind", choices=["shapes", "textures"])
    g.add_argument("root")
    g.add_argument("--train", type=int, default=400)
    g.add_argument("--val", type=int, default=120)
    g.add_argument("--size", type=int, nargs=2, default=[128, 160])
    g.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("config", help="config/config.yaml with the dataset section for a check set")
    c.add_argument("root")
    c.add_argument("out")
    c.add_argument("--name", default=None)
    r = sub.add_parser("classifier", help="train the classifier once, print its learning figures")
    r.add_argument("config")
    r.add_argument("--set", nargs="*", help="overrides key.sub=value (YAML values)")
    r.add_argument("--work", default="/tmp/esol_checkset_run")
    r.add_argument("--out", default=None, help="append the JSON line to this file")
    r.add_argument("--threads", type=int, default=1)
    q = sub.add_parser("probe", help="linear probe of frozen backbones (name:pretrained)")
    q.add_argument("config")
    q.add_argument("--backbones", nargs="+",
                   default=["efficientnet_lite0:imagenet", "efficientnet_lite0:none", "resnet:none"])
    q.add_argument("--holdout", type=float, default=0.2)
    q.add_argument("--out", default=None)
    q.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    {"generate": _generate, "config": _config, "classifier": _classifier,
     "probe": _probe}[args.cmd](args)


if __name__ == "__main__":
    main()
