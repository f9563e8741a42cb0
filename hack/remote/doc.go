// Package remote holds what lbd needs on the Kubernetes master to run with
// least privilege, and the lab test that proves it:
//
//   - rbac.yaml: the ServiceAccount lbd-system/lbd, allowed only to
//     get/list/watch services, endpointslices and endpoints, and to
//     patch services/status (what a server-side apply of status is);
//   - token-secret.yaml: an optional non-expiring token Secret for it;
//   - kubeconfig.sh: prints a kubeconfig for that ServiceAccount;
//   - the forced command itself is cmd/lbd-remote.
//
// The package has no Go code besides its test.
package remote
