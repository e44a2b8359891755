package bridge

import (
	"encoding/json"
	"testing"
)

// TestClaimEqualsNumbersExact: a required number is compared exactly, not
// as a float64, so that a neighbouring id beyond 2^53 is not accepted.
func TestClaimEqualsNumbersExact(t *testing.T) {
	for _, tt := range []struct {
		raw  string
		want any
		eq   bool
	}{
		{`12345678901234567891`, uint64(12345678901234567890), false},
		{`12345678901234567890`, uint64(12345678901234567890), true},
		{`9007199254740993`, 9007199254740992, false},
		{`[9007199254740993]`, int64(9007199254740992), false},
		{`[1, 9007199254740992]`, int64(9007199254740992), true},
		{`1`, 1, true},
		{`1.0`, 1, true},
		{`1e0`, 1, true},
		{`1.5`, 1.5, true},
		{`2`, 1, false},
		{`"1"`, 1, false},
		{`1`, "1", false},
		{`true`, true, true},
		{`{"a": 1}`, map[string]any{"a": 1.0}, true},
	} {
		if got := claimEquals(json.RawMessage(tt.raw), tt.want); got != tt.eq {
			t.Errorf("claimEquals(%s, %v) = %v, want %v", tt.raw, tt.want, got, tt.eq)
		}
	}
}
