#!/usr/bin/env bash
# Leader failover beside etcd, 30 trials each: kill -9 of the leader to the first write committed by
# the new leader; Teal's defaults beside etcd's defaults and beside etcd tuned to Teal's timeouts
# (failover.py says how). Arguments go to failover.py: --trials N, --only teal,etcd,etcd-tuned
# (also teal-300, etcd-300), --interval MS, --json FILE. Knobs: those of common.sh.
set -uo pipefail
source "$(dirname "$0")/common.sh"
trap anchors_cleanup EXIT INT TERM

anchors_need etcd:etcd-server etcdctl:etcd-client openssl:openssl curl:curl python3:python3
anchors_build
echo "# $(etcd --version | head -1); $(nproc) cores; load at the start $(load)"
python3 "$anchors_dir/failover.py" --teal "$TEAL" --teal-api-port "$TEAL_API_PORT" --teal-peer-port "$TEAL_PEER_PORT" \
  --etcd-client-port "$ETCD_CLIENT_PORT" --etcd-peer-port "$ETCD_PEER_PORT" "$@"
echo "# load at the end $(load)"
