# Shared by the scripts in Benchmarks/anchors/ (sourced, not run): installing the peers, a 3-node
# Teal cluster and a 3-member etcd 3.4 cluster with peer TLS on loopback, leaders, load, clean-up.
# Every process started here is recorded by PID and stopped by PID in anchors_cleanup.
#
# Knobs (environment): PACKAGE_DIR (default: the repository root), SKIP_BUILD=1 (use the release
# build already there), BIN_DIR (take teal and teal-demo from there, no build), TEAL_API_PORT
# (17370), TEAL_PEER_PORT (17300), ETCD_CLIENT_PORT (12379), ETCD_PEER_PORT (12380), KEEP_WORK=1
# (keep the temporary directory with the logs).

anchors_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGE_DIR="${PACKAGE_DIR:-$(cd "$anchors_dir/../.." && pwd)}"
TEAL_API_PORT="${TEAL_API_PORT:-17370}"
TEAL_PEER_PORT="${TEAL_PEER_PORT:-17300}"
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"

work="$(mktemp -d /tmp/teal-anchors.XXXXXX)"
anchor_pids=()  # every etcd, haproxy, teal-demo and helper process started here
teal_dirs=()    # every Teal cluster directory started here (stopped with `teal cluster down`)

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# Installs Debian packages that are missing (the peers the comparisons run beside Teal).
anchors_need() { # command:package ...
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get install -y)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >"$work/apt.log" 2>&1 \
      || { apt-get update >>"$work/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$work/apt.log" 2>&1; } \
      || { echo "could not install ${missing[*]}: $work/apt.log" >&2; exit 1; }
    # The Debian etcd-server package enables a system etcd on 2379/2380; it is not ours to keep.
    if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null; then
      systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
  fi
}

# Release builds of teal and teal-demo (once; SKIP_BUILD=1 uses what is built).
anchors_build() {
  local build=(swift build --package-path "$PACKAGE_DIR" -c release)
  if [[ -n "${BIN_DIR:-}" ]]; then
    bin="$BIN_DIR"
  else
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
      "${build[@]}" --product teal >&2
      "${build[@]}" --product teal-demo >&2
    fi
    bin="$("${build[@]}" --show-bin-path)"
  fi
  TEAL="$bin/teal"
  TEAL_DEMO="$bin/teal-demo"
  [[ -x "$TEAL" && -x "$TEAL_DEMO" ]] || { echo "no release build of teal/teal-demo in $bin" >&2; exit 1; }
}

anchors_cleanup() {
  local status=$?
  for dir in "${teal_dirs[@]}"; do
    [[ -f "$dir/cluster.yaml" ]] && "$TEAL" cluster down --dir "$dir" --timeout 5 >/dev/null 2>&1
  done
  for pid in "${anchor_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${anchor_pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "logs kept in $work"; else rm -rf "$work"; fi
  exit "$status"
}

wait_for_port() { # host port
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  exit 1
}

# MARK: - Teal

# A new 3-node cluster in DIR (n1 = 127.0.0.1, n2 = .2, n3 = .3); extra arguments go to `cluster up`.
teal_up() { # dir [--election-timeout-ms N]
  local dir="$1"
  shift
  teal_dirs+=("$dir")
  "$TEAL" cluster up --dir "$dir" --api-port "$TEAL_API_PORT" --peer-port "$TEAL_PEER_PORT" --wait 120 "$@" >"$dir.up.log" 2>&1 \
    || { cat "$dir.up.log" >&2; exit 1; }
}

teal_token() { cat "$1/token"; }

# The index (1-3) of the node that leads, from the nodes' own views.
teal_leader() { # dir
  local token
  token="$(teal_token "$1")"
  for _ in $(seq 1 200); do
    for i in 1 2 3; do
      local view
      view="$(curl -s -m 1 -H "Authorization: Bearer $token" "http://127.0.0.$i:$TEAL_API_PORT/v1/cluster?stale=true")" || continue
      local leader
      leader="$(python3 -c 'import json,sys
v=json.load(sys.stdin); l=v.get("leader")
m=[x for x in v.get("members",[]) if x["id"]==l and x["role"]=="leader"]
print(l[1:] if m else "")' <<<"$view" 2>/dev/null)"
      [[ -n "$leader" ]] && { echo "$leader"; return 0; }
    done
    sleep 0.1
  done
  echo "no Teal leader" >&2
  return 1
}

# MARK: - etcd

# A CA and one certificate per member, for etcd's peer TLS (mutual). etcd checks that a peer's
# certificate names the address it connects from, and on loopback Linux picks the destination as the
# source (e2 -> e3 comes from 127.0.0.3), so every certificate names all three loopback addresses.
etcd_certs() { # dir
  local dir="$1"
  mkdir -p "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -subj /CN=anchors-ca -days 2 -out "$dir/ca.pem" 2>/dev/null
  for i in 1 2 3; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/e$i.key" 2>/dev/null
    openssl req -new -key "$dir/e$i.key" -subj "/CN=e$i" -out "$dir/e$i.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.%s,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3\nextendedKeyUsage=serverAuth,clientAuth\n' "$i" >"$dir/e$i.ext"
    openssl x509 -req -in "$dir/e$i.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
      -extfile "$dir/e$i.ext" -out "$dir/e$i.pem" 2>/dev/null
  done
}

etcd_dir=""
etcd_flags=()
etcd_pid=()

# One member (index 1-3) of the cluster in etcd_dir, in the background; its PID in etcd_pid[i].
etcd_member() { # index
  local i="$1" cluster="" j
  for j in 1 2 3; do cluster+="${cluster:+,}e$j=https://127.0.0.$j:$ETCD_PEER_PORT"; done
  local state=new
  [[ -d "$etcd_dir/e$i.data/member" ]] && state=existing
  etcd --name "e$i" --data-dir "$etcd_dir/e$i.data" \
    --listen-client-urls "http://127.0.0.$i:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.$i:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "https://127.0.0.$i:$ETCD_PEER_PORT" --initial-advertise-peer-urls "https://127.0.0.$i:$ETCD_PEER_PORT" \
    --initial-cluster "$cluster" --initial-cluster-token anchors --initial-cluster-state "$state" \
    --peer-cert-file "$etcd_dir/certs/e$i.pem" --peer-key-file "$etcd_dir/certs/e$i.key" \
    --peer-trusted-ca-file "$etcd_dir/certs/ca.pem" --peer-client-cert-auth \
    --logger zap "${etcd_flags[@]}" >>"$etcd_dir/e$i.log" 2>&1 &
  etcd_pid[$i]=$!
  anchor_pids+=($!)
}

# A new 3-member etcd cluster in DIR; extra arguments are etcd flags for every member
# (e.g. --heartbeat-interval 167 --election-timeout 1000).
etcd_up() { # dir [etcd flags...]
  etcd_dir="$1"
  shift
  etcd_flags=("$@")
  mkdir -p "$etcd_dir"
  etcd_certs "$etcd_dir/certs"
  for i in 1 2 3; do etcd_member "$i"; done
  etcd_leader >/dev/null
}

# Stops every member of the current etcd cluster (SIGTERM by PID, then SIGKILL).
etcd_down() {
  for i in 1 2 3; do [[ -n "${etcd_pid[$i]:-}" ]] && kill "${etcd_pid[$i]}" 2>/dev/null; done
  for i in 1 2 3; do
    [[ -n "${etcd_pid[$i]:-}" ]] || continue
    for _ in $(seq 1 50); do kill -0 "${etcd_pid[$i]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${etcd_pid[$i]}" 2>/dev/null || true
  done
}

# The index (1-3) of the member that leads (every member's /v3/maintenance/status).
etcd_leader() {
  for _ in $(seq 1 300); do
    for i in 1 2 3; do
      local status
      status="$(curl -s -m 1 -X POST -d '{}' "http://127.0.0.$i:$ETCD_CLIENT_PORT/v3/maintenance/status")" || continue
      local me
      me="$(python3 -c 'import json,sys
s=json.load(sys.stdin); print("yes" if s.get("leader") and s["leader"]==s["header"]["member_id"] else "")' <<<"$status" 2>/dev/null)"
      [[ "$me" == yes ]] && { echo "$i"; return 0; }
    done
    sleep 0.1
  done
  echo "no etcd leader" >&2
  return 1
}
