rule train_classifier:
    input:
        dataset=prepared("dataset.json"),
    output:
        model=model_path("classifier"),
        history=f"{RESULTS}/models/classifier_history.csv",
    log:
        log_path("train_classifier"),
    benchmark:
        benchmark_path("train_classifier")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(stage_mem_mb("classifier")),
        runtime=attempt_scaled(stage_runtime("classifier")),
        gpu=training_gpus(),
    params:
        **RUN_PARAMS,
        code=code_digest("train_classifier.py"),
        processes=config["gpus_per_job"],
        # Params make Snakemake rerun the rule when these config sections change.
        model=config["model"],
        classifier=config["classifier"],
        train_split=DATASET["train_split"],
    script:
        "../scripts/train_classifier.py"
