package main

import "testing"

func TestCheckPprofAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6060", true},
		{"[::1]:6060", true},
		{"127.0.0.2:0", true},
		{"[::ffff:127.0.0.1]:6060", true},
		{"0.0.0.0:6060", false},
		{":6060", false},
		{"localhost:6060", false},
		{"10.0.0.1:6060", false},
		{"[::]:6060", false},
		{"127.0.0.1", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			if err := checkPprofAddr(tc.addr); (err == nil) != tc.ok {
				t.Errorf("checkPprofAddr(%q) = %v, want ok %v", tc.addr, err, tc.ok)
			}
		})
	}
}
