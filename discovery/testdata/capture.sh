#!/usr/bin/env bash
# capture.sh regenerates the kubectl fixtures in this directory from a real
# kube-apiserver: it starts etcd and kube-apiserver in a scratch network
# namespace (lbd-disc-capture), applies objects.yaml, sets the LoadBalancer
# status through the status subresource, and saves what lbd's remote command
# prints. It then restarts the apiserver with discovery.k8s.io/v1 turned off
# to capture the real error text of a cluster without EndpointSlices.
#
# Run as root from anywhere: discovery/testdata/capture.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$here/../../hack/.bin/k8s-v1.32.13" && pwd)
ns=lbd-disc-capture
addr=192.0.2.10
work=$(mktemp -d /tmp/lbd-disc-capture.XXXXXX)
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

ip netns del "$ns" 2>/dev/null || true
ip netns add "$ns"
inns() { ip netns exec "$ns" "$@"; }
# Daemons are started as "(exec ip netns exec ...) &" so that $! is the
# daemon's own pid and kill reaches it.
inns ip link set lo up
# The namespace's only address, on lo: the apiserver needs a non-127/8
# address to advertise, and nothing here leaves the namespace.
inns ip addr add "$addr/32" dev lo

cd "$work"
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
echo 'devtoken,admin,admin-uid,system:masters' >tokens.csv

(exec ip netns exec "$ns" etcd --name lab --data-dir "$work/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster lab=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
	>etcd.log 2>&1) &
pids+=($!)

apiserver() {
	(exec ip netns exec "$ns" "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address="$addr" --advertise-address="$addr" --secure-port=6443 \
		--cert-dir="$work/certs" --token-auth-file=tokens.csv --authorization-mode=AlwaysAllow \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
		--service-cluster-ip-range=10.247.0.0/16 "$@" >>apiserver.log 2>&1) &
	pids+=($!)
}

cat >kubeconfig <<EOK
apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "https://$addr:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: devtoken}}]
contexts: [{name: lab, context: {cluster: lab, user: admin}}]
current-context: lab
EOK
kc() { inns "$bin/kubectl" --kubeconfig "$work/kubeconfig" "$@"; }

wait_ready() {
	for _ in $(seq 1 120); do
		if kc get ns default >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	echo "apiserver did not become ready; log:" >&2
	tail -30 apiserver.log >&2
	return 1
}

apiserver
wait_ready
kc apply -f "$here/objects.yaml" >&2
kc -n shop patch service shop-lb --subresource=status --type=merge \
	-p '{"status":{"loadBalancer":{"ingress":[{"ip":"192.168.121.210"},{"hostname":"lb.example.com"}]}}}' >&2
# The apiserver writes the kubernetes service's EndpointSlice a little after
# it is ready; wait for it so both fixtures carry it.
for _ in $(seq 1 60); do
	kc -n default get endpointslice kubernetes >/dev/null 2>&1 && break
	sleep 0.5
done

kc get services,endpointslices.discovery.k8s.io --all-namespaces -o json >"$here/services-endpointslices.json"
kc get services,endpoints --all-namespaces -o json >"$here/services-endpoints.json"

# A cluster without the EndpointSlice API: capture kubectl's real stderr.
kill "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
unset 'pids[-1]'

apiserver --runtime-config=discovery.k8s.io/v1=false
wait_ready
if kc get services,endpointslices.discovery.k8s.io --all-namespaces -o json >/dev/null 2>"$here/no-endpointslices.stderr"; then
	echo "expected the EndpointSlice query to fail" >&2
	exit 1
fi
echo "captured into $here" >&2
