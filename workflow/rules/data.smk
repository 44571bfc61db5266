rule generate_synthetic:
    output:
        directory(synthetic_root()),
    params:
        synthetic=DATASET.get("synthetic"),
    log:
        log_path("generate_synthetic"),
    benchmark:
        benchmark_path("generate_synthetic")
    threads: 1
    resources:
        mem_mb=data_mem_mb(),
        runtime=data_runtime(),
    conda:
        "../../envs/esol.yaml"
    script:
        "../scripts/generate_synthetic.py"


rule prepare_data:
    input:
        dataset_inputs,
    output:
        dataset=prepared("dataset.json"),
    log:
        log_path("prepare_data"),
    benchmark:
        benchmark_path("prepare_data")
    threads: DATA_THREADS
    resources:
        mem_mb=data_mem_mb(),
        runtime=data_runtime(),
    conda:
        "../../envs/esol.yaml"
    script:
        "../scripts/prepare_data.py"
