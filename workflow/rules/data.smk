rule generate_synthetic:
    output:
        directory(synthetic_root()),
    params:
        synthetic=DATASET.get("synthetic"),
        seed=config["seed"],
    log:
        log_path("generate_synthetic"),
    benchmark:
        benchmark_path("generate_synthetic")
    threads: 1
    resources:
        mem_mb=data_mem_mb(),
        runtime=data_runtime(),
    conda:
        "../envs/esol.yaml"
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
    params:
        dataset=DATASET,
        manifest=user_dataset_manifest(),
    log:
        log_path("prepare_data"),
    benchmark:
        benchmark_path("prepare_data")
    threads: DATA_THREADS
    resources:
        mem_mb=data_mem_mb(),
        runtime=data_runtime(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/prepare_data.py"


# Full-scale datasets as published, converted into the VOC layout under converted()
# (never into the user's folders). Masks are written one by one, atomically; the
# manifest is written last and is the rule's output, so a rerun resumes the masks.


rule convert_sbd:
    output:
        manifest=converted("sbd.json"),
    params:
        root=DATASET.get("root"),
        sbd_root=DATASET.get("sbd_root"),
    log:
        log_path("convert_sbd"),
    benchmark:
        benchmark_path("convert_sbd")
    threads: DATA_THREADS
    resources:
        mem_mb=convert_mem_mb(),
        runtime=convert_runtime(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/convert_sbd.py"


rule convert_coco:
    input:
        annotations=coco_annotations(),
    output:
        manifest=converted("coco.json"),
    params:
        coco=DATASET.get("coco"),
    log:
        log_path("convert_coco"),
    benchmark:
        benchmark_path("convert_coco")
    threads: DATA_THREADS
    resources:
        # The parsed instances_train2014.json (~330 MB on disk, ~3.6 bytes in memory
        # per file byte: benchmarks/conversion.py) plus small workers.
        mem_mb=convert_mem_mb(),
        runtime=convert_runtime(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/convert_coco.py"
