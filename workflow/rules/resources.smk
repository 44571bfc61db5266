# Resources of every rule: threads, mem_mb (host RAM), runtime (minutes, a wall-time
# limit) and gpu (GPUs per job). Defaults derive from the config (how many images a rule
# reads and how large, crop and batch, backbone depth, whether the device can be CUDA),
# so full-scale configs ask for more. Profiles and the command line override any of them
# (--set-threads, --set-resources, profiles/*/config.yaml) without editing a rule.
#
# The convention every new rule follows (README, "Resources"), in its declaration
#   threads: TORCH_THREADS (network rules), DATA_THREADS (image I/O) or 1
#   resources:
#       mem_mb=<helper below>, runtime=<helper below>, gpu=gpus()   # gpu only where the
#                                                                    # script calls select_device
# Helpers take plain values at parse time or `wildcards` when the size depends on one;
# no lambdas in rules. New stages reuse training_mem_mb/training_runtime and
# inference_mem_mb/inference_runtime with their own config section's numbers.
#
# Where the numbers come from: memory per pixel and per process from
# benchmarks/rule_resources.py (peak RSS on the CPU, ResNet-18 and -50 measured; 34 and
# 101 scaled by their activation and parameter counts). Time per pixel from a ResNet-50
# training step on 2 CPU cores (13 s for 8 crops of 512x512, measured on this project's machine),
# other depths scaled by FLOPs; a GPU is assumed GPU_SPEEDUP times faster (no GPU here
# to measure it). Estimates are multiplied by safety factors: a job over its memory or
# time is killed, one that asks for a little more only waits a little longer.

import json
import inspect
import math
from types import SimpleNamespace

TORCH_THREADS = 8  # intra-op threads of the network rules (torch.set_num_threads)
DATA_THREADS = 4  # image decoding/validation workers
MB = 2**20

# Peak RSS after importing torch and building the network (MB), measured for 18 and 50.
PROCESS_MB = {18: 800, 34: 900, 50: 1100, 101: 1300}
# Training: parameters + gradients + momentum + allocator slack (MB), measured for 18, 50.
TRAIN_STATE_MB = {18: 200, 34: 350, 50: 900, 101: 1500}
# Training (forward + backward): RSS bytes per input pixel of a batch, measured 18, 50.
TRAIN_BYTES_PER_PX = {18: 800, 34: 1400, 50: 3100, 101: 5000}
# Inference without gradients (CAM extraction): bytes per input pixel, measured 18, 50.
INFER_BYTES_PER_PX = {18: 270, 34: 450, 50: 450, 101: 700}
# Peak RSS of the rules that build no network (numpy, h5py, matplotlib): 600-810 MB in
# the Snakemake benchmarks of a tiny run.
TOOL_PROCESS_MB = 800
# Host memory a CUDA context adds to a process (MB; an assumption, not measured here).
CUDA_HOST_MB = 2500
DATALOADER_WORKER_MB = 500
# Seconds per input pixel of a training step on 2 CPU cores: ResNet-50 measured,
# the others by FLOPs at 224x224 (1.8, 3.7, 4.1, 7.8 GFLOPs). Inference: a third.
TRAIN_SECONDS_PER_PX = {
    d: 13 / (8 * 512 * 512) * f / 4.1
    for d, f in ((18, 1.8), (34, 3.7), (50, 4.1), (101, 7.8))
}
GPU_SPEEDUP = 20
# Threshold sweep: seconds per pixel per threshold (SeedSweep.add, 21 classes, measured).
SWEEP_SECONDS_PER_PX = 1.5e-9
# Decoding an image and its mask (read_image + read_label, 500x375, measured: 2e-8).
DECODE_SECONDS_PER_PX = 2e-8
MEM_SAFETY = 1.5
TIME_SAFETY = 3
MIN_RUNTIME = 10  # minutes: start-up, imports, writing outputs, a slow shared node
# A VOC-layout dataset's images are not read at parse time: assume the largest side of
# PASCAL VOC (500) or MS COCO (640) images, and VOC's train_aug size for unknown splits.
VOC_LAYOUT_SIDE = 640
VOC_LAYOUT_IMAGES = 10582


def gpus():
    """GPUs a job that runs a network asks for: none when the config pins the CPU, else one."""
    return 0 if config["device"] == "cpu" else 1


# A job killed for memory or time on a cluster is resubmitted (profiles set `retries`)
# with ATTEMPT_GROWTH times more of both per attempt, so an estimate that fell short
# for one unusually large image costs one retry, not a failed run.
ATTEMPT_GROWTH = 1.5


def attempt_scaled(value):
    """A resource grown per Snakemake attempt: a number, or a helper taking wildcards
    (and ``input``, for sizes read from prepare_data's dataset.json at job start)."""
    takes_input = callable(value) and "input" in inspect.signature(value).parameters

    def resource(wildcards, input, attempt):
        if not callable(value):
            base = value
        elif takes_input:
            base = value(wildcards, input)
        else:
            base = value(wildcards)
        return int(math.ceil(base * ATTEMPT_GROWTH ** (attempt - 1)))

    return resource


def training_gpus():
    """GPUs of a training job: config gpus_per_job workers (one GPU each) on one node."""
    return gpus() * config["gpus_per_job"]


# Other backbone families are estimated as the ResNet whose training memory they
# resemble: EfficientNet-Lite0 has ResNet-18's parameter count but its 6x expanded
# blocks keep activations closer to ResNet-50's (an over-estimate of its time).
FAMILY_AS_DEPTH = {"efficientnet_lite0": 50}


def as_depth(model):
    """The ResNet depth the tables above use for ``model`` (a model.backbone or
    segmentation.model section)."""
    name = model.get("name", "resnet")
    return model["depth"] if name == "resnet" else FAMILY_AS_DEPTH[name]


def backbone_depth():
    return as_depth(config["model"]["backbone"])


def split_size(split):
    """Images in a split: the generator's count, or the lines of the VOC split file."""
    if DATASET["source"] == "synthetic":
        return DATASET["synthetic"]["counts"].get(split, 0)
    listing = os.path.join(
        DATASET.get("root") or "", "ImageSets", "Segmentation", f"{split}.txt"
    )
    try:
        with open(listing) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return VOC_LAYOUT_IMAGES


def image_side(dataset_json=None):
    """The largest image side of the dataset (pixels), or for a prepared VOC-layout dataset
    the side of a square as large as its largest image (prepare_data records each split's
    largest image in dataset.json): memory goes with the pixel count, and one 3000x2250
    photo among VOC-sized ones is what a job must hold."""
    if DATASET["source"] == "synthetic":
        return max(DATASET["synthetic"]["image_size"])
    if dataset_json and os.path.isfile(dataset_json):
        with open(dataset_json) as f:
            largest = json.load(f).get("largest") or {}
        if largest:
            return max(math.sqrt(h * w) for h, w in largest.values())
    return VOC_LAYOUT_SIDE


def sized_by_largest_image(mem_mb):
    """A rule's mem_mb from ``mem_mb(side)``: a number when the dataset's image size is
    known at parse time (synthetic), else a function Snakemake calls when the job starts,
    once prepare_data's dataset.json (an input of every per-image rule) exists."""
    if DATASET["source"] == "synthetic":
        return mem_mb(image_side())

    def from_dataset(wildcards, input):
        return mem_mb(image_side(input.get("dataset")))

    return from_dataset


def _round_mb(mb):
    return int(math.ceil(mb / 250) * 250)


def _minutes(seconds):
    return int(MIN_RUNTIME + math.ceil(TIME_SAFETY * seconds / 60))


def training_mem_mb(batch_size, crop, depth, workers=0):
    """Host RAM of a training process: activations live there only on the CPU."""
    if gpus():
        need = PROCESS_MB[depth] + CUDA_HOST_MB
    else:
        need = (
            PROCESS_MB[depth]
            + TRAIN_STATE_MB[depth]
            + batch_size * crop * crop * TRAIN_BYTES_PER_PX[depth] / MB
        )
    return _round_mb(MEM_SAFETY * (need + workers * DATALOADER_WORKER_MB))


def training_runtime(images, epochs, crop, depth):
    seconds = images * epochs * crop * crop * TRAIN_SECONDS_PER_PX[depth]
    return _minutes(seconds / (GPU_SPEEDUP if gpus() else 1))


def _inference_pixels(side, scales, flip):
    """Input pixels of the largest forward pass over one image (the image and its flip)."""
    return (side * max(scales)) ** 2 * (2 if flip else 1)


def inference_mem_mb(side, scales, flip, depth):
    need = PROCESS_MB[depth] + (CUDA_HOST_MB if gpus() else 0)
    if not gpus():
        need += _inference_pixels(side, scales, flip) * INFER_BYTES_PER_PX[depth] / MB
    return _round_mb(MEM_SAFETY * need)


def inference_runtime(images, side, scales, flip, depth):
    pixels = sum((side * s) ** 2 for s in scales) * (2 if flip else 1)
    seconds = images * pixels * TRAIN_SECONDS_PER_PX[depth] / 3
    return _minutes(seconds / (GPU_SPEEDUP if gpus() else 1))


# -- the rules' values ---------------------------------------------------------------


def stage_mem_mb(section):
    """train_classifier / train_expansion / train_shrinkage: config section by name."""
    s = config[section]
    crop = config["classifier"][
        "crop"
    ]  # the ESOL stages train on the classifier's crops
    return training_mem_mb(
        s["batch_size"], crop, backbone_depth(), config["classifier"]["num_workers"]
    )


def stage_runtime(section):
    s = config[section]
    return training_runtime(
        split_size(DATASET["train_split"]),
        s["epochs"],
        config["classifier"]["crop"],
        backbone_depth(),
    )


def cam_mem_mb():
    """Peak RSS of make_cam on one 3000x2250 image, ResNet-18, scales (1, 0.5, 1.5) + flip,
    20 classes: 6.3 GB (benchmarks/cam_memory.py); this asks 12.9 GB for it."""
    c = config["cam"]
    return sized_by_largest_image(
        lambda side: inference_mem_mb(side, c["scales"], c["flip"], backbone_depth())
    )


def shard_size(split, parts=None):
    """Images in one shard job's part of a split (config shards)."""
    return math.ceil(split_size(split) / (SHARDS if parts is None else parts))


def gather_mem_mb():
    """A gather rule holds one file's metadata at a time (links or copies, no decoding)."""
    return _round_mb(MEM_SAFETY * TOOL_PROCESS_MB)


# Placing one shard's file in the gathered folder: a hard link, or a copy of a label PNG
# where links fail (an assumption, generous: a few kB per file).
GATHER_SECONDS_PER_IMAGE = 1e-3


def gather_runtime(wildcards):
    split = getattr(wildcards, "split", None) or DATASET["train_split"]
    return _minutes(split_size(split) * GATHER_SECONDS_PER_IMAGE)


def cam_runtime(wildcards, parts=None):
    """One make_cam job: its shard of the split (``parts=1``: the whole split)."""
    c = config["cam"]
    return inference_runtime(
        shard_size(wildcards.split, parts),
        image_side(),
        c["scales"],
        c["flip"],
        backbone_depth(),
    )


def sweep_thresholds():
    t = config["eval"]["thresholds"]
    return int(round((t["stop"] - t["start"]) / t["step"])) + 1


def eval_mem_mb():
    """A split's CAMs are read one image at a time; maps of one image at full size."""
    classes = len(dataset_class_names())
    return _round_mb(
        MEM_SAFETY * (TOOL_PROCESS_MB + 8 * (classes + 1) * image_side() ** 2 / MB)
    )


def eval_runtime(wildcards):
    seconds = split_size(wildcards.split) * image_side() ** 2 * sweep_thresholds()
    return _minutes(seconds * SWEEP_SECONDS_PER_PX)


def data_mem_mb():
    """Dataset generation and validation: a few images at a time, plus the label index."""
    return _round_mb(
        MEM_SAFETY * (TOOL_PROCESS_MB + 3 * image_side() ** 2 * DATA_THREADS / MB)
    )


def data_runtime():
    images = sum(split_size(s) for s in SPLITS)
    return _minutes(images * image_side() ** 2 * DECODE_SECONDS_PER_PX)


def dataset_class_names():
    if DATASET["source"] == "synthetic":
        return list(range(DATASET["synthetic"]["num_classes"]))
    return DATASET.get("classes") or list(range(20))


def report_runtime():
    """compare_seeds: tables and a few figures from per-method summaries, start-up bound."""
    return _minutes(0)


# -- conversion of the full-scale datasets (data.smk) --------------------------------

# convert_coco holds the parsed instances file once: 3.6 bytes of RSS per file byte
# (benchmarks/conversion.py); 330 MB for instances_train2014.json when not on disk yet.
COCO_JSON_RSS_PER_BYTE = 3.6
COCO_JSON_DEFAULT_BYTES = 330e6
# Rendering a COCO mask or converting an SBD .mat: 1 / 47 s per 640x480 image, measured.
CONVERT_SECONDS_PER_PX = 1 / (47 * 640 * 480)


def convert_mem_mb():
    need = TOOL_PROCESS_MB + DATA_THREADS * (TOOL_PROCESS_MB / 2)
    if DATASET["source"] == "coco":
        files = coco_annotations()
        size = max(
            [os.path.getsize(f) for f in files if os.path.exists(f)]
            or [COCO_JSON_DEFAULT_BYTES]
        )
        need += COCO_JSON_RSS_PER_BYTE * size / MB
    return _round_mb(MEM_SAFETY * need)


def convert_runtime():
    images = sum(split_size(s) for s in SPLITS)
    return _minutes(images * image_side() ** 2 * CONVERT_SECONDS_PER_PX / DATA_THREADS)


# -- refinement: CRF and IRN (refine.smk, refine_irn.smk) -------------------------

# Dense CRF (10 mean-field iterations) on one image: 0.06 s for a 165x165 image, measured.
CRF_SECONDS_PER_PX = 0.06 / 165**2
# IRN random walk, sparse transition matrix: +143 MB RSS and ~2.8 s on one thread for a
# 500x500 image (benchmarks/random_walk_memory.py); both scale with the pixel count.
RANDOM_WALK_MB_PER_PX = 143 / 500**2
RANDOM_WALK_SECONDS_PER_PX = 2.8 / (500 * 375)


def crf_mem_mb(side=None):
    """Per worker: an image, its seed scores and the CRF's Q (classes + 1 maps)."""
    if side is None:
        return sized_by_largest_image(crf_mem_mb)
    classes = len(dataset_class_names())
    per_worker = TOOL_PROCESS_MB / 2 + 4 * 3 * (classes + 1) * side**2 / MB
    return _round_mb(MEM_SAFETY * (TOOL_PROCESS_MB + DATA_THREADS * per_worker))


def crf_runtime(wildcards):
    """One crf_seed job: its shard of the split."""
    seconds = shard_size(wildcards.split) * image_side() ** 2 * CRF_SECONDS_PER_PX
    return _minutes(seconds / DATA_THREADS)


def ir_labels_runtime():
    """Two CRFs per image (confident foreground and background) over a shard of the
    training split."""
    seconds = (
        2 * shard_size(DATASET["train_split"]) * image_side() ** 2 * CRF_SECONDS_PER_PX
    )
    return _minutes(seconds / DATA_THREADS)


def irn_mem_mb():
    t = config["irn"]["train"]
    return training_mem_mb(
        t["batch_size"], t["crop"], backbone_depth(), t["num_workers"]
    )


def irn_runtime():
    t = config["irn"]["train"]
    return training_runtime(
        split_size(DATASET["train_split"]), t["epochs"], t["crop"], backbone_depth()
    )


def pseudo_masks_mem_mb():
    def need(side):
        walk = RANDOM_WALK_MB_PER_PX * side**2
        return _round_mb(
            inference_mem_mb(side, [1.0], True, backbone_depth()) + MEM_SAFETY * walk
        )

    return sized_by_largest_image(need)


def pseudo_masks_runtime():
    """The random walk and IRN's forward pass over a shard of the training split."""
    images, side = shard_size(DATASET["train_split"]), image_side()
    walk = (
        images * side**2 * RANDOM_WALK_SECONDS_PER_PX / (GPU_SPEEDUP if gpus() else 1)
    )
    network = 60 * (
        inference_runtime(images, side, [1.0], True, backbone_depth()) - MIN_RUNTIME
    )
    return _minutes(network / TIME_SAFETY + walk)


# PSA (refine_psa.smk): its walk runs at stride 8 on 448-channel features; +72 MB RSS
# at most for a 500x500 image, 0.8 s for 500x375 on one thread
# (benchmarks/random_walk_memory.py, psa case).
PSA_WALK_MB_PER_PX = 72 / 500**2
PSA_WALK_SECONDS_PER_PX = 0.8 / (500 * 375)


def psa_labels_runtime():
    """Two CRFs per image (low and high alpha) over the training split, as ir_labels."""
    return ir_labels_runtime()


def psa_mem_mb():
    t = refiner_section("psa").get("train")
    if not t:
        return _round_mb(TOOL_PROCESS_MB)
    return training_mem_mb(
        t["batch_size"], t["crop"], backbone_depth(), t["num_workers"]
    )


def psa_runtime():
    t = refiner_section("psa").get("train")
    if not t:
        return MIN_RUNTIME
    return training_runtime(
        split_size(DATASET["train_split"]), t["epochs"], t["crop"], backbone_depth()
    )


def psa_masks_mem_mb():
    def need(side):
        walk = PSA_WALK_MB_PER_PX * side**2
        return _round_mb(
            inference_mem_mb(side, [1.0], False, backbone_depth()) + MEM_SAFETY * walk
        )

    return sized_by_largest_image(need)


def psa_masks_runtime():
    """The random walk and AffinityNet's forward pass over a shard of the training split."""
    images, side = shard_size(DATASET["train_split"]), image_side()
    walk = images * side**2 * PSA_WALK_SECONDS_PER_PX / (GPU_SPEEDUP if gpus() else 1)
    network = 60 * (
        inference_runtime(images, side, [1.0], False, backbone_depth()) - MIN_RUNTIME
    )
    return _minutes(network / TIME_SAFETY + walk)


# -- segmentation: DeepLab-v2 (segment.smk) ------------------------------------------

# Output stride 8 keeps 4x the activations of the stride-16 classifier in its last stages.
DEEPLAB_ACTIVATION_FACTOR = 2.5


def deeplab_depth():
    return as_depth(config["segmentation"]["model"])


def deeplab_mem_mb():
    t = config["segmentation"]["train"]
    scales = 1 + sum(s**2 for s in config["segmentation"]["model"]["msc_scales"])
    pixels_crop = int(t["crop"] * math.sqrt(DEEPLAB_ACTIVATION_FACTOR * scales))
    return training_mem_mb(
        t["batch_size"], pixels_crop, deeplab_depth(), t["num_workers"]
    )


def deeplab_runtime():
    t = config["segmentation"]["train"]
    scales = 1 + sum(s**2 for s in config["segmentation"]["model"]["msc_scales"])
    crop = int(t["crop"] * math.sqrt(DEEPLAB_ACTIVATION_FACTOR * scales))
    return training_runtime(
        split_size(DATASET["train_split"]), t["epochs"], crop, deeplab_depth()
    )


def deeplab_predict_mem_mb():
    p = config["segmentation"]["predict"]

    def need(side):
        network = inference_mem_mb(side, p["scales"], p["flip"], deeplab_depth())
        return _round_mb(DEEPLAB_ACTIVATION_FACTOR * network + crf_mem_mb(side))

    return sized_by_largest_image(need)


def deeplab_predict_runtime(wildcards):
    """One predict_segmentation job: its shard of the split."""
    p = config["segmentation"]["predict"]
    images, side = shard_size(wildcards.split), image_side()
    network = (
        60
        * (
            inference_runtime(images, side, p["scales"], p["flip"], deeplab_depth())
            - MIN_RUNTIME
        )
        / TIME_SAFETY
    )
    crf = images * side**2 * CRF_SECONDS_PER_PX / DATA_THREADS
    return _minutes(DEEPLAB_ACTIVATION_FACTOR * network + crf)


def tune_runtime(wildcards):
    """tune_threshold: the threshold sweep over the tuning split."""
    return eval_runtime(SimpleNamespace(split=TUNING_SPLIT))


def advcam_runtime(wildcards):
    """make_advcam: adv_iter forward-backward passes per scale, each about six of a
    CAM pass (forward, backward, the regulariser's CAM)."""
    return cam_runtime(wildcards, parts=1) * 6 * config["advcam"]["adv_iter"]


# -- saliency (saliency.smk) ---------------------------------------------------------

# OpenCV's fine-grained static saliency: 0.52 s for 80 images of about 160x160, measured
# (one thread, docs/saliency.md); the combination reads two PNGs and writes one.
SALIENCY_SECONDS_PER_PX = 0.52 / (80 * 160**2)


def saliency_runtime(per_px):
    """saliency_maps (per_px: the detector's) and saliency_masks (decoding) on the
    training split."""
    seconds = split_size(DATASET["train_split"]) * image_side() ** 2 * per_px
    return _minutes(seconds / DATA_THREADS)
