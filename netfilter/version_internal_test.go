package netfilter

import "testing"

func TestDescribeVersion(t *testing.T) {
	tests := []struct{ out, want string }{
		{"iptables v1.8.9 (nf_tables)\n", "iptables v1.8.9 (nf_tables), mode nft"},
		{"iptables v1.8.7 (legacy)\n", "iptables v1.8.7 (legacy), mode legacy"},
	}
	for _, tt := range tests {
		if got := describeVersion([]byte(tt.out)); got != tt.want {
			t.Errorf("describeVersion(%q) = %q, want %q", tt.out, got, tt.want)
		}
	}
}
