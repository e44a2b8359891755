package main

import (
	"strings"
	"testing"
)

// Asking for help is not a usage error: every command and subcommand exits
// 0 for -h and prints something; a wrong flag exits 2.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"serve", "-h"}, {"config", "-h"}, {"config", "check", "-h"}, {"user-id", "-h"},
		{"reconcile", "-h"}, {"mappings", "-h"}, {"mappings", "check", "-h"}, {"mappings", "explain", "-h"},
		{"healthcheck", "-h"}, {"setup", "-h"}, {"state", "-h"}, {"state", "reseal", "-h"}, {"version", "-h"},
	} {
		var out, errOut strings.Builder
		if code := run(args, &out, &errOut); code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
		if out.Len()+errOut.Len() == 0 {
			t.Errorf("%v: printed nothing", args)
		}
	}
	for _, args := range [][]string{{"serve", "-nope"}, {"config", "check", "-nope"}, {"reconcile", "-x"}, {}, {"bogus"}} {
		var out, errOut strings.Builder
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
