rule generate_synthetic:
    output:
        directory(synthetic_root()),
    log:
        log_path("generate_synthetic"),
    benchmark:
        benchmark_path("generate_synthetic")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(data_mem_mb()),
        runtime=attempt_scaled(data_runtime()),
    params:
        code=code_digest("generate_synthetic.py"),
        synthetic=DATASET.get("synthetic"),
        seed=config["seed"],
    script:
        "../scripts/generate_synthetic.py"


# A user's dataset (source voc) is no rule's output: its split lists are inputs and a
# manifest of its images and masks (names, sizes, mtimes; computed when the DAG is
# built) is a param, so an edited list, a replaced mask or a removed image reruns
# prepare_data and everything after it.


rule prepare_data:
    input:
        dataset_inputs,
        splits=user_split_lists(),
    output:
        dataset=prepared("dataset.json"),
    log:
        log_path("prepare_data"),
    benchmark:
        benchmark_path("prepare_data")
    conda:
        "../envs/esol.yaml"
    threads: DATA_THREADS
    resources:
        mem_mb=attempt_scaled(data_mem_mb()),
        runtime=attempt_scaled(data_runtime()),
    params:
        code=code_digest("prepare_data.py"),
        dataset=DATASET,
        manifest=user_dataset_manifest(),
    script:
        "../scripts/prepare_data.py"


# Full-scale datasets as published, converted into the VOC layout under converted()
# (never into the user's folders). Masks are written one by one, atomically; the
# manifest is written last and is the rule's output, so a rerun resumes the masks.


rule convert_sbd:
    output:
        manifest=converted("sbd.json"),
    log:
        log_path("convert_sbd"),
    benchmark:
        benchmark_path("convert_sbd")
    conda:
        "../envs/esol.yaml"
    threads: DATA_THREADS
    resources:
        mem_mb=attempt_scaled(convert_mem_mb()),
        runtime=attempt_scaled(convert_runtime()),
    params:
        code=code_digest("convert_sbd.py"),
        root=DATASET.get("root"),
        sbd_root=DATASET.get("sbd_root"),
    script:
        "../scripts/convert_sbd.py"


rule convert_coco:
    input:
        annotations=coco_annotations(),
    output:
        manifest=converted("coco.json"),
    log:
        log_path("convert_coco"),
    benchmark:
        benchmark_path("convert_coco")
    conda:
        "../envs/esol.yaml"
    threads: DATA_THREADS
    resources:
        # The parsed instances_train2014.json (~330 MB on disk, ~3.6 bytes in memory
        # per file byte: benchmarks/conversion.py) plus small workers.
        mem_mb=attempt_scaled(convert_mem_mb()),
        runtime=attempt_scaled(convert_runtime()),
    params:
        code=code_digest("convert_coco.py"),
        coco=DATASET.get("coco"),
    script:
        "../scripts/convert_coco.py"
