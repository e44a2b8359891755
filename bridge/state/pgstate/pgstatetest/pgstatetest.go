// Package pgstatetest gives tests fresh PostgreSQL schemas on the test
// stack's state database (stack.json's postgres.dsn), for the pgstate
// adapter's own tests and for tests that run the bridge on it.
package pgstatetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// StackEnv names the stack file that testdata/stack/stack.sh writes.
const StackEnv = "DIRECTUS_BRIDGE_STACK"

// DSN returns the stack's DSN. Outside CI the test is skipped when there
// is none; in CI (CI set) that is a failure.
func DSN(t testing.TB) string {
	t.Helper()
	path := os.Getenv(StackEnv)
	fail := t.Skipf
	if os.Getenv("CI") != "" {
		fail = t.Fatalf
	}
	if path == "" {
		fail("%s is not set: the PostgreSQL state needs the test stack (testdata/stack/stack.sh up)", StackEnv)
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Postgres *struct {
			DSN string `json:"dsn"`
		} `json:"postgres"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if s.Postgres == nil || s.Postgres.DSN == "" {
		fail("%s has no postgres.dsn (the stack runs PostgreSQL only with directus12-postgres)", path)
		return ""
	}
	return s.Postgres.DSN
}

// Schemas creates fresh schemas on the stack's database and drops them
// when the test ends. Admin is its connection; hold Mu to use it.
type Schemas struct {
	DSN     string
	Admin   *pgx.Conn
	Mu      sync.Mutex
	created []string
}

// NewSchemas connects to the stack's database (see DSN).
func NewSchemas(t testing.TB) *Schemas {
	t.Helper()
	dsn := DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the stack's PostgreSQL: %v", err)
	}
	s := &Schemas{DSN: dsn, Admin: admin}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Mu.Lock()
		defer s.Mu.Unlock()
		for _, name := range s.created {
			if _, err := admin.Exec(ctx, `DROP SCHEMA `+name+` CASCADE`); err != nil {
				t.Errorf("drop schema %s: %v", name, err)
			}
		}
		admin.Close(ctx)
	})
	return s
}

// Fresh creates an empty schema and returns the DSN that uses it.
func (s *Schemas) Fresh(t testing.TB) string {
	t.Helper()
	dsn, _ := s.FreshSchema(t)
	return dsn
}

// FreshSchema creates an empty schema and returns the DSN that uses it and
// the schema's name.
func (s *Schemas) FreshSchema(t testing.TB) (dsn, name string) {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name = "pgstate_test_" + hex.EncodeToString(b)
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if _, err := s.Admin.Exec(context.Background(), `CREATE SCHEMA `+name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	s.created = append(s.created, name)
	return WithParam(t, s.DSN, "search_path", name), name
}

// Exec runs sql on the admin connection.
func (s *Schemas) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if _, err := s.Admin.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// WithParam returns dsn (a URL) with a query parameter set.
func WithParam(t testing.TB, dsn, k, v string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal("the stack's DSN is not a URL")
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String()
}
