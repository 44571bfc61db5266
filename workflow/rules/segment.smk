# Segmentation (paper 4.1.2, Table 3): DeepLab-v2 trained on a label source (the
# dataset's own masks, "gt", or a method's pseudo masks), multi-scale + flip inference
# with dense CRF, evaluation; then the report that collects every evaluation of the run.


report: "../report/workflow.rst"


rule train_segmentation:
    input:
        dataset=prepared("dataset.json"),
        labels=segmentation_labels,
        init=segmentation_init,
    output:
        model=deeplab_path("{source}"),
        history=f"{RESULTS}/models/deeplab_{{source}}_history.csv",
    log:
        log_path("train_segmentation", "{source}"),
    benchmark:
        benchmark_path("train_segmentation", "{source}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(deeplab_mem_mb()),
        runtime=attempt_scaled(deeplab_runtime()),
        gpu=training_gpus(),
    params:
        **RUN_PARAMS,
        code=code_digest("train_segmentation.py"),
        processes=config["gpus_per_job"],
        model=SEGMENTATION["model"],
        train=SEGMENTATION["train"],
        label_dir=segmentation_label_dir,
        train_split=DATASET["train_split"],
    script:
        "../scripts/train_segmentation.py"


# With config shards > 1, shard {shard} of N per job, joined by gather_predictions.
rule predict_segmentation:
    input:
        dataset=prepared("dataset.json"),
        model=deeplab_path("{source}"),
    output:
        raw=directory(sharded(prediction_dir("{source}", "{split}", "raw"))),
        crf=directory(sharded(prediction_dir("{source}", "{split}", "crf"))),
    log:
        log_path("predict_segmentation", "{source}", f"{{split}}{SHARD_SUFFIX}"),
    benchmark:
        benchmark_path("predict_segmentation", "{source}", f"{{split}}{SHARD_SUFFIX}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(deeplab_predict_mem_mb()),
        runtime=attempt_scaled(deeplab_predict_runtime),
        gpu=gpus(),
    params:
        **INFERENCE_PARAMS,
        code=code_digest("predict_segmentation.py"),
        predict=SEGMENTATION["predict"],
        shard=shard_of,
    script:
        "../scripts/predict_segmentation.py"


if SHARDS > 1:

    rule gather_predictions:
        input:
            dataset=prepared("dataset.json"),
            raw=shard_parts(prediction_dir("{source}", "{split}", "raw")),
            crf=shard_parts(prediction_dir("{source}", "{split}", "crf")),
        output:
            raw=directory(prediction_dir("{source}", "{split}", "raw")),
            crf=directory(prediction_dir("{source}", "{split}", "crf")),
        log:
            log_path("gather_predictions", "{source}", "{split}"),
        benchmark:
            benchmark_path("gather_predictions", "{source}", "{split}")
        conda:
            "../envs/esol.yaml"
        threads: 1
        resources:
            mem_mb=attempt_scaled(gather_mem_mb()),
            runtime=attempt_scaled(gather_runtime),
        params:
            code=code_digest("gather_predictions.py"),
        script:
            "../scripts/gather_predictions.py"


rule eval_segmentation:
    input:
        dataset=prepared("dataset.json"),
        raw=prediction_dir("{source}", "{split}", "raw"),
        crf=prediction_dir("{source}", "{split}", "crf"),
    output:
        json=segmentation_json("{source}", "{split}"),
    log:
        log_path("eval_segmentation", "{source}", "{split}"),
    benchmark:
        benchmark_path("eval_segmentation", "{source}", "{split}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(eval_runtime),
    params:
        code=code_digest("eval_segmentation.py"),
    script:
        "../scripts/eval_segmentation.py"


rule segmentation_submission:
    input:
        dataset=prepared("dataset.json"),
        crf=prediction_dir("{source}", "{split}", "crf"),
    output:
        directory(submission_dir("{source}", "{split}")),
    log:
        log_path("segmentation_submission", "{source}", "{split}"),
    benchmark:
        benchmark_path("segmentation_submission", "{source}", "{split}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(data_mem_mb()),
        runtime=attempt_scaled(report_runtime()),
    params:
        code=code_digest("segmentation_submission.py"),
    script:
        "../scripts/segmentation_submission.py"


rule report:
    input:
        unpack(report_table1_inputs),
        unpack(report_extra_inputs),
        dataset=prepared("dataset.json"),
        segmentation=expand(segmentation_json("{source}"), source=SEG_SOURCES),
        predictions=expand(
            prediction_dir("{source}", SEGMENTATION["eval_split"], "crf"),
            source=SEG_SOURCES,
        ),
        seed_metrics=expand(seed_outputs("{method}")["json"], method=METHODS),
        sweeps=expand(seed_outputs("{method}")["csv"], method=METHODS),
        table6_md=f"{RESULTS}/seeds/table6.md",
        table6_csv=f"{RESULTS}/seeds/table6.csv",
        recall_png=f"{RESULTS}/seeds/recall_vs_threshold.png",
        fig5_png=f"{RESULTS}/seeds/fig5_grid.png",
        histories=training_histories(),
    output:
        **report_extra_outputs(),
        md=report_path("report.md"),
        # Snakemake's report shows .html and images in the page, but .csv and .md only
        # as downloads: every table is registered as a self-contained HTML page.
        full_html=report(
            report_path("full_report.html"),
            caption="../report/report_page.rst",
            category="1. Report",
        ),
        table3=report_path("table3.csv"),
        table3_html=report(
            report_path("table3.html"),
            caption="../report/table3.rst",
            category="2. Segmentation",
        ),
        fig4=report(
            report_path("fig4_segmentation.png"),
            caption="../report/fig4.rst",
            category="2. Segmentation",
        ),
        table1_html=report(
            report_path("table1.html"),
            caption="../report/table1.rst",
            category="3. Refinement",
        ),
        table6=report_path("table6.csv"),
        table6_html=report(
            report_path("table6.html"),
            caption="../report/table6.rst",
            category="4. Seeds",
        ),
        thresholds=report(
            report_path("threshold_curves.png"),
            caption="../report/thresholds.rst",
            category="4. Seeds",
        ),
        recall=report(
            report_path("recall_vs_threshold.png"),
            caption="../report/recall.rst",
            category="4. Seeds",
        ),
        fig5=report(
            report_path("fig5_grid.png"),
            caption="../report/fig5.rst",
            category="4. Seeds",
        ),
        training=report(
            directory(report_path("training")),
            patterns=["{stage}.png"],
            caption="../report/training.rst",
            category="5. Training",
            labels={"stage": "{stage}"},
        ),
        times=report_path("times.csv"),
        times_html=report(
            report_path("times.html"),
            caption="../report/times.rst",
            category="6. Time",
        ),
        times_png=report(
            report_path("times.png"),
            caption="../report/times_png.rst",
            category="6. Time",
        ),
    log:
        log_path("report"),
    benchmark:
        benchmark_path("report")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(report_runtime()),
    params:
        code=code_digest("report.py"),
        sources=SEG_SOURCES,
        benchmarks=f"{RESULTS}/benchmarks",
        report=config["report"],
        rule_order=PIPELINE_RULES,
        sweeps=list(SWEEPS),
    script:
        "../scripts/report.py"
