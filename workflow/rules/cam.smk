rule make_cam:
    input:
        dataset=prepared("dataset.json"),
        checkpoint=method_checkpoint,
    output:
        cams=cam_path("{method}", "{split}"),
    params:
        method=method_spec,
        cam=config["cam"],
        clip_beta=config["expansion"]["clip_beta"],
        **INFERENCE_PARAMS,
    log:
        log_path("make_cam", "{method}", "{split}"),
    benchmark:
        benchmark_path("make_cam", "{method}", "{split}")
    threads: TORCH_THREADS
    resources:
        mem_mb=cam_mem_mb(),
        runtime=cam_runtime,
        gpu=gpus(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/make_cam.py"


rule eval_seed:
    input:
        dataset=prepared("dataset.json"),
        cams=seed_cams,
    output:
        **seed_outputs("{method}", "{split}"),
    params:
        thresholds=config["eval"]["thresholds"],
    log:
        log_path("eval_seed", "{method}", "{split}"),
    benchmark:
        benchmark_path("eval_seed", "{method}", "{split}")
    threads: 1
    resources:
        mem_mb=eval_mem_mb(),
        runtime=eval_runtime,
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/eval_seed.py"
