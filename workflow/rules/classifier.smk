rule train_classifier:
    input:
        dataset=prepared("dataset.json"),
    output:
        model=model_path("classifier"),
        history=f"{RESULTS}/models/classifier_history.csv",
    params:
        # Params make Snakemake rerun the rule when these config sections change.
        model=config["model"],
        classifier=config["classifier"],
    log:
        log_path("train_classifier"),
    benchmark:
        benchmark_path("train_classifier")
    threads: 8
    resources:
        mem_mb=8000,
        runtime=600,
    conda:
        "../../envs/esol.yaml"
    script:
        "../scripts/train_classifier.py"
