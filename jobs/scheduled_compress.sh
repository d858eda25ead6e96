#!/usr/bin/env bash
# Scheduled compression of a growing archive: submit one Ray job per schedule slot.
#   jobs/scheduled_compress.sh ARCHIVE STORE [nic-ray compress options...]
# The submission id names the slot (hourly by default, NIC_RAY_SLOT=+%Y%m%d for daily), and Ray
# refuses a repeated id: a slot never runs twice, even if the scheduler fires twice. Only new or
# changed slides are compressed; slides another run is working on are waited for, not redone.
set -euo pipefail
archive=$1 store=$2
shift 2
slot=$(date -u "${NIC_RAY_SLOT:-+%Y%m%d%H}")
name=$(basename "${store%/}" .zarr | tr -c 'A-Za-z0-9-\n' '-')
exec ray job submit \
  --address "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://ray-head:8265}" \
  --submission-id "compress-${name}-${slot}" \
  -- python -m nic_ray.cli compress "$archive" --store "$store" "$@"
