"""`ray job submit` entrypoint: compress an archive into a store (the `nic-ray compress` options).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/compress.py s3://lab/archive/ --store s3://lab/stores/brca.zarr \
        --encoder nic --encoders 4 --gpus-per-encoder 1 --cpus-per-encoder 14

Only slides that are new, changed or incomplete are compressed; a re-run of a finished archive
does no work. Exit 0 when every slide is complete, 1 when some failed (see the run report).
"""

import sys

from nic_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["compress", *sys.argv[1:]]))
