package pgstate

import (
	"context"
	"net"
	"testing"
	"time"
)

// A server that accepts connections and never answers (a black hole) fails
// a connection attempt within the default connect timeout, not the
// caller's whole deadline.
func TestConnectTimeoutDefault(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	old := DefaultConnectTimeout
	DefaultConnectTimeout = 300 * time.Millisecond
	defer func() { DefaultConnectTimeout = old }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Open(ctx, "postgres://u:pw@"+l.Addr().String()+"/db?sslmode=disable")
	if err == nil {
		t.Fatal("connected to a black hole")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the attempt took %s: no connect timeout by default", d)
	}
}
