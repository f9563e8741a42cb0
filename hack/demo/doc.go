// Command demo is `make demo`: it shows a new user lbd carrying traffic on
// this machine within a minute, with nothing outside network namespaces.
//
// `demo up` installs what is missing (hack/install-deps.sh), builds lbd,
// starts the lab "demo" (namespaces lbd-demo-master, -lb, -client and
// -pod0..2, with a real etcd, kube-apiserver and sshd on the master),
// creates the design notes' nginx service (external IP 192.168.121.201,
// port 80, the three pods as endpoints), then runs lbd once with the
// iptables backend and once with haproxy. After each run it sends requests
// from the client namespace and counts which pod answered, prints
// `lbd status` and the notes' `select * from ServiceToEndPointsMapping`,
// removes one endpoint with kubectl, syncs again and shows that the next
// requests avoid that pod. It ends by printing how to explore the lab,
// which it leaves running (lab.Options.Detach), with wrapper scripts for
// lbd and kubectl in its state directory.
//
// `demo down` kills every process in the lbd-demo-* namespaces (etcd,
// kube-apiserver, sshd, haproxy, pod servers), deletes the namespaces and
// removes the state directory. `demo up` does the same first, so it can be
// run again; when it fails, it removes the lab it made and keeps only the
// logs.
//
// Usage (as root, from the repository):
//
//	go run ./hack/demo up   [-dir /tmp/lbd-demo] [-lbd bin/lbd] [-install-deps=false] [-requests 10]
//	go run ./hack/demo down [-dir /tmp/lbd-demo]
package main
