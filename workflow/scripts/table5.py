"""Rule table5: pseudo-label generation time per method (the paper's Table 5)."""

from esol.timing import describe_device, write_table5
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    write_table5(snakemake.params.chains, snakemake.params.kinds,  # noqa: F821
                 snakemake.params.cam_splits,  # noqa: F821
                 describe_device(snakemake.config["device"]), **snakemake.output)  # noqa: F821
