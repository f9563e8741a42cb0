#!/bin/sh
# kubeconfig.sh prints, on stdout, a kubeconfig for lbd's ServiceAccount
# (hack/remote/rbac.yaml): the current cluster's server and CA, and a token
# of the ServiceAccount. Run it where an admin kubectl works (the master),
# and write the output where lbd-remote reads it:
#
#   (umask 077; hack/remote/kubeconfig.sh > /etc/lbd-remote/kubeconfig)
#
# usage: kubeconfig.sh [--duration 8760h | --secret NAME]
#                      [--namespace lbd-system] [--serviceaccount lbd] [--server URL]
#
#   --duration D   a bound token that expires after D (kubectl create token);
#                  the default, 8760h. The apiserver may cap it
#                  (--service-account-max-token-expiration): run this again
#                  before it expires.
#   --secret NAME  the token of a kubernetes.io/service-account-token Secret
#                  (hack/remote/token-secret.yaml): it never expires.
#   --server URL   the apiserver URL as the master reaches it; default: the
#                  current context's.
#
# KUBECTL is the admin's kubectl command, split on spaces (default
# "kubectl"), e.g. KUBECTL="kubectl --kubeconfig /etc/kubernetes/admin.conf".
set -eu

ns=lbd-system
sa=lbd
duration=8760h
secret=
server=
kubectl=${KUBECTL:-kubectl}

die() { echo "kubeconfig.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	--duration) [ $# -ge 2 ] || die "$1 needs a value"; duration=$2; shift 2 ;;
	--secret) [ $# -ge 2 ] || die "$1 needs a value"; secret=$2; shift 2 ;;
	--namespace) [ $# -ge 2 ] || die "$1 needs a value"; ns=$2; shift 2 ;;
	--serviceaccount) [ $# -ge 2 ] || die "$1 needs a value"; sa=$2; shift 2 ;;
	--server) [ $# -ge 2 ] || die "$1 needs a value"; server=$2; shift 2 ;;
	-h|--help) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

# $kubectl is split on purpose: it is a command and its flags.
# shellcheck disable=SC2086
k() { $kubectl "$@"; }

view() { k config view --minify --raw -o "jsonpath=$1"; }

[ -n "$server" ] || server=$(view '{.clusters[0].cluster.server}') || die "cannot read the current cluster's server"
[ -n "$server" ] || die "the current context names no server; give --server"
ca=$(view '{.clusters[0].cluster.certificate-authority-data}') || die "cannot read the current cluster's CA"
if [ -z "$ca" ]; then
	cafile=$(view '{.clusters[0].cluster.certificate-authority}') || die "cannot read the current cluster's CA"
	[ -n "$cafile" ] || die "the current cluster has no certificate-authority; lbd-remote's kubeconfig needs one"
	ca=$(base64 < "$cafile" | tr -d '\n') || die "read CA file $cafile"
fi

if [ -n "$secret" ]; then
	token=$(k get secret "$secret" -n "$ns" -o 'jsonpath={.data.token}') || die "read Secret $ns/$secret"
	[ -n "$token" ] || die "Secret $ns/$secret has no token yet (does kube-controller-manager run? is it annotated kubernetes.io/service-account.name: $sa?)"
	token=$(printf '%s' "$token" | base64 -d) || die "decode the token of Secret $ns/$secret"
else
	token=$(k create token "$sa" -n "$ns" --duration="$duration") || die "create a token for ServiceAccount $ns/$sa"
fi
[ -n "$token" ] || die "empty token"

cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: $ns-$sa
  user:
    token: $token
contexts:
- name: lbd
  context:
    cluster: cluster
    user: $ns-$sa
current-context: lbd
KUBECONFIG
