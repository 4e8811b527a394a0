#!/usr/bin/env bash
# The production layout on one machine: a 3-node NATS cluster (JetStream,
# replicas 3, the component users of deploy/nats/permissions.conf) and
# every daemon as its own process (ingest, two dispatchers, the relay, the
# monitor), configured by the env files of deploy/systemd with only the
# machine-specific values (addresses, folders, passwords) overridden.
#
#   make cluster                  # builds ./bin, then runs this script
#   CLUSTER_DIR=/tmp/c make cluster
#
# Everything lives in CLUSTER_DIR (default ./cluster): the NATS stores, the
# configurations, the passwords, the S2S certificate and one log per
# process. A second start reuses them. Ctrl-C stops every process.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
DIR=${CLUSTER_DIR:-$ROOT/cluster}
ORG=${CLUSTER_ORG:-example.com}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

for b in nats-server pushctl ingest dispatcher relay monitor; do
	[ -x "$BIN/$b" ] || { echo "cluster: $BIN/$b is missing; run make cluster (it builds ./bin)" >&2; exit 1; }
done

# One password per NATS user, made once (and for users added since).
touch "$DIR/passwords.env"
chmod 600 "$DIR/passwords.env"
for u in ADMIN INGEST DISPATCHER MONITOR RELAY RECONCILER; do
	grep -q "^PUSHPROXY_NATS_${u}_PASSWORD=" "$DIR/passwords.env" ||
		echo "PUSHPROXY_NATS_${u}_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >>"$DIR/passwords.env"
done
set -a
# shellcheck disable=SC1091
. "$DIR/passwords.env"
set +a

pids=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "cluster: stopping"
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

# start NAME ENVFILES... -- COMMAND...: runs COMMAND with the env files of
# deploy/systemd, then the overrides in the environment variables named
# O_*, logging to DIR/NAME.log.
start() {
	local name=$1
	shift
	local files=()
	while [ "$1" != "--" ]; do files+=("$1"); shift; done
	shift
	(
		set -a
		for f in "${files[@]}"; do . "$ROOT/deploy/systemd/$f"; done
		for v in $(compgen -v O_); do export "${v#O_}=${!v}"; done
		set +a
		exec "$@"
	) >>"$DIR/$name.log" 2>&1 &
	pids+=($!)
	echo "cluster: $name started (pid $!, log $DIR/$name.log)"
}

# The NATS cluster, with the shipped permissions.
cp "$ROOT/deploy/nats/permissions.conf" "$DIR/permissions.conf"
ROUTES="nats-route://127.0.0.1:6231,nats-route://127.0.0.1:6232,nats-route://127.0.0.1:6233"
NATS_URL="nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233"
for n in 1 2 3; do
	cat >"$DIR/n$n.conf" <<EOF
server_name: n$n
listen: 127.0.0.1:423$n
http: 127.0.0.1:823$n
ping_interval: "2s"
ping_max: 2
jetstream { store_dir: "$DIR/n$n" }
cluster {
  name: pushproxy-local
  listen: 127.0.0.1:623$n
  routes: [$ROUTES]
}
include ./permissions.conf
EOF
	start "nats-$n" -- "$BIN/nats-server" --config "$DIR/n$n.conf"
done

# wait_port PORT NAME: until something listens on 127.0.0.1:PORT, so that
# what depends on it starts after it (the monitor probes the relay at once).
wait_port() {
	for _ in $(seq 1 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "cluster: $2 does not listen on port $1; see $DIR/$2.log" >&2
	exit 1
}

admin() {
	PUSHPROXY_NATS_URL=$NATS_URL PUSHPROXY_NATS_USER=admin PUSHPROXY_NATS_PASSWORD=$PUSHPROXY_NATS_ADMIN_PASSWORD "$BIN/pushctl" "$@"
}

# The layout, once JetStream has a meta leader (provisioning is idempotent).
for i in $(seq 1 60); do
	if admin provision --replicas 3 >>"$DIR/pushctl.log" 2>&1; then break; fi
	[ "$i" = 60 ] && { echo "cluster: NATS did not form a JetStream cluster; see $DIR/nats-*.log" >&2; exit 1; }
	sleep 1
done
echo "cluster: layout provisioned (replicas 3)"

# First start: the S2S certificate, the relay's partner and apps, the proxy
# and an ingest credential.
RELAY=127.0.0.1:8227
if [ ! -d "$DIR/auth" ]; then
	admin auth new-certificate --domain "$ORG" --out "$DIR/auth" >>"$DIR/pushctl.log"
	admin auth export --out "$DIR/OAuthCert.cer" >>"$DIR/pushctl.log"
	admin relay partner add --organization "$ORG" --certificate "$DIR/OAuthCert.cer" >>"$DIR/pushctl.log"
	admin relay app add --app-id demo --provider log --organization "$ORG" >>"$DIR/pushctl.log"
	admin relay app add --app-id pushproxy-canary --provider log --organization "$ORG" >>"$DIR/pushctl.log"
	admin proxy enable --organization "$ORG" --uri "http://$RELAY/PushNotifications" >>"$DIR/pushctl.log"
	admin credentials create --tenant "$ORG" --role events,subscriptions,read --description "make cluster" --json |
		sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' >"$DIR/ingest-token"
	cp "$DIR/ingest-token" "$DIR/canary-token"
	chmod 600 "$DIR/ingest-token" "$DIR/canary-token"
fi

# The daemons, each with its own NATS user.
export O_PUSHPROXY_NATS_URL=$NATS_URL O_PUSHPROXY_LOG_FORMAT=console
O_PUSHPROXY_NATS_PASSWORD=$PUSHPROXY_NATS_RELAY_PASSWORD O_PUSHPROXY_HTTP_ADDR=$RELAY O_PUSHPROXY_HOST=127.0.0.1 \
	O_PUSHPROXY_PUBLIC_URL="http://$RELAY/PushNotifications" O_PUSHPROXY_TLS_CERT= O_PUSHPROXY_TLS_KEY= O_PUSHPROXY_REPLICAS=3 \
	O_PUSHPROXY_DEVICES_PAGE=true start relay relay.env -- "$BIN/relay"
wait_port 8227 relay
for i in 1 2; do
	O_PUSHPROXY_NATS_PASSWORD=$PUSHPROXY_NATS_DISPATCHER_PASSWORD O_PUSHPROXY_HTTP_ADDR=127.0.0.1:824$i \
		O_PUSHPROXY_CERT_DIR=$DIR/auth O_PUSHPROXY_INSTANCE_ID=dispatcher-$i start "dispatcher-$i" common.env dispatcher.env -- "$BIN/dispatcher"
done
O_PUSHPROXY_NATS_PASSWORD=$PUSHPROXY_NATS_INGEST_PASSWORD O_PUSHPROXY_HTTP_ADDR=127.0.0.1:8225 \
	O_PUSHPROXY_NATIVE_TOKEN_FILE= O_PUSHPROXY_DOVECOT_USER= O_PUSHPROXY_DOVECOT_PASSWORD_FILE= \
	start ingest common.env ingest.env -- "$BIN/ingest"
wait_port 8225 ingest
O_PUSHPROXY_NATS_PASSWORD=$PUSHPROXY_NATS_MONITOR_PASSWORD O_PUSHPROXY_HTTP_ADDR=127.0.0.1:8229 O_PUSHPROXY_CERT_DIR=$DIR/auth \
	O_PUSHPROXY_ALERTMANAGER_URL= O_PUSHPROXY_INGEST_URL=http://127.0.0.1:8225 O_PUSHPROXY_INGEST_TOKEN_FILE=$DIR/canary-token \
	start monitor common.env monitor.env -- "$BIN/monitor"

cat <<EOF

pushproxy cluster: 3 NATS servers and 5 daemons, each its own process (logs in $DIR)
  NATS        $NATS_URL   (users and passwords: $DIR/passwords.env)
  ingest      http://127.0.0.1:8225   (credential: \$(cat $DIR/ingest-token))
  relay       http://$RELAY   (devices page: http://$RELAY/devices)
  metrics     /metrics on ingest :8225, dispatchers :8241 :8242, monitor :8229, relay :8227

  export PUSHPROXY_NATS_URL=$NATS_URL PUSHPROXY_NATS_USER=admin PUSHPROXY_NATS_PASSWORD=\$PUSHPROXY_NATS_ADMIN_PASSWORD
  $BIN/pushctl status

Ctrl-C stops everything; data stays in $DIR (rm -rf it to start afresh).
EOF
wait -n "${pids[@]}" || true
echo "cluster: a process ended; see its log in $DIR" >&2
