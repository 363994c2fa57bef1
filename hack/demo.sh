#!/usr/bin/env bash
# make demo: a local S3 endpoint (rclone serve s3), two sample server disks, and a real
# replication of both through the installed collection. Run it again: nothing changes.
#   bash hack/demo.sh          start (or reuse) the endpoint, replicate
#   bash hack/demo.sh stop     stop the endpoint
# Change a disk and run again for a new latest image:
#   .venv/bin/python hack/sample_disk.py .demo/disks/web01.img --change && bash hack/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/.demo
VENV=$ROOT/.venv/bin
BUCKET=${COS_BUCKET:-vmimage-demo}
SERVERS=(web01 db01)
DISK_SIZE=${DEMO_DISK_SIZE:-256M}

stop_endpoint() {
  if [ -f "$DEMO/rclone.pid" ]; then
    pid=$(cat "$DEMO/rclone.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "Stopped the demo S3 endpoint (pid $pid)"
    fi
    rm -f "$DEMO/rclone.pid" "$DEMO/rclone.port"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop_endpoint
  exit 0
fi

mkdir -p "$DEMO/disks" "$DEMO/s3/$BUCKET" "$DEMO/work" "$DEMO/snapshots"
chmod 0700 "$DEMO"

# Keys: random, realistic, made once; kept in a 0600 file, passed on by environment only.
if [ ! -s "$DEMO/credentials" ]; then
  (
    umask 077
    "$VENV/python" - > "$DEMO/credentials" <<'PY'
import secrets, string
upper = string.ascii_uppercase + string.digits
print("COS_HMAC_ACCESS_KEY_ID=AKIA" + "".join(secrets.choice(upper) for _ in range(16)))
print("COS_HMAC_SECRET_ACCESS_KEY=" + "".join(secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(40)))
PY
  )
fi
chmod 0600 "$DEMO/credentials"
set -a
# shellcheck disable=SC1091
. "$DEMO/credentials"
set +a

# The endpoint: reuse the running one, else start rclone serve s3 on a free loopback port.
if [ -f "$DEMO/rclone.pid" ] && kill -0 "$(cat "$DEMO/rclone.pid")" 2>/dev/null; then
  PORT=$(cat "$DEMO/rclone.port")
  echo "Reusing the demo S3 endpoint on 127.0.0.1:$PORT"
else
  PORT=$("$VENV/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The keys reach rclone through its environment (CSV-quoted pair), never its command line.
  RCLONE_AUTH_KEY="\"$COS_HMAC_ACCESS_KEY_ID,$COS_HMAC_SECRET_ACCESS_KEY\"" RCLONE_CONFIG="$DEMO/rclone.conf" \
    nohup "$VENV/rclone" serve s3 "$DEMO/s3" --addr "127.0.0.1:$PORT" \
    --multipart-streaming-buffer-limit 0 --multipart-streaming-buffer-total 0 \
    --log-level INFO >"$DEMO/rclone.log" 2>&1 </dev/null &
  echo $! >"$DEMO/rclone.pid"
  echo "$PORT" >"$DEMO/rclone.port"
  for _ in $(seq 100); do
    if "$VENV/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.5)" 2>/dev/null; then break; fi
    kill -0 "$(cat "$DEMO/rclone.pid")" 2>/dev/null || { echo "rclone failed to start, see $DEMO/rclone.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "Started the demo S3 endpoint on 127.0.0.1:$PORT (pid $(cat "$DEMO/rclone.pid"), objects under $DEMO/s3)"
fi
export COS_ENDPOINT="http://127.0.0.1:$PORT" COS_REGION=us-south COS_BUCKET="$BUCKET" VMIMAGE_DEMO_DIR="$DEMO"

# Sample disks: real ext4 filesystems partly filled with real files, made once.
for server in "${SERVERS[@]}"; do
  if [ ! -f "$DEMO/disks/$server.img" ]; then
    echo "Building the sample disk of $server ($DISK_SIZE)"
    "$VENV/python" hack/sample_disk.py "$DEMO/disks/$server.img" --size "$DISK_SIZE" --fill 0.4
  fi
done

# Install the collection the way users get it: build the tarball, install it.
rm -rf .build/demo-dist
"$VENV/ansible-galaxy" collection build --force --output-path .build/demo-dist >/dev/null
"$VENV/ansible-galaxy" collection install --force -p .build/demo-collections .build/demo-dist/vmimage-replication-*.tar.gz >/dev/null
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.build/demo-collections" ANSIBLE_CONFIG="$ROOT/ansible.cfg"

"$VENV/ansible-playbook" vmimage.replication.replicate -i examples/local/inventory.yml "$@"

cat <<TXT

Images are in s3://$BUCKET at $COS_ENDPOINT (files under $DEMO/s3/$BUCKET).
Run again: nothing changes. Change a disk, then run again for a new latest image:
  .venv/bin/python hack/sample_disk.py .demo/disks/web01.img --change && make demo
Stop the endpoint: make demo-stop
TXT
