package netfilter

import (
	"context"
	"strings"
)

// Version runs `iptables --version` (with opts' binary) for `lbd check`
// and returns its line with the mode it reports, e.g.
// "iptables v1.8.9 (nf_tables), mode nft"; an error when it does not run.
func Version(ctx context.Context, opts Options) (string, error) {
	out, err := runCommand(ctx, nil, opts.binary(), "--version")
	if err != nil {
		return "", err
	}
	return describeVersion(out), nil
}

// describeVersion turns the output of `iptables --version` into the line
// Version returns.
func describeVersion(out []byte) string {
	v := strings.TrimSpace(string(out))
	mode := "legacy"
	if strings.Contains(v, "nf_tables") {
		mode = "nft"
	}
	return v + ", mode " + mode
}
