package main

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

func TestParseStates(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		hasPG   bool
		want    []string
		wantErr bool
	}{
		{name: "default with a postgres DSN", value: "", hasPG: true, want: []string{"bbolt", "postgres"}},
		{name: "default without", value: "", hasPG: false, want: []string{"bbolt"}},
		{name: "postgres only", value: "postgres", hasPG: true, want: []string{"postgres"}},
		{name: "spaces and order kept", value: " postgres , bbolt ", hasPG: true, want: []string{"postgres", "bbolt"}},
		{name: "postgres without a DSN", value: "bbolt,postgres", hasPG: false, wantErr: true},
		{name: "unknown backend", value: "bbolt,sqlite", hasPG: true, wantErr: true},
		{name: "twice", value: "bbolt,bbolt", hasPG: true, wantErr: true},
		{name: "empty item", value: "bbolt,", hasPG: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStates(tt.value, tt.hasPG)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStates(%q, %v) error %v, want error %v", tt.value, tt.hasPG, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseStates(%q, %v) = %q, want %q", tt.value, tt.hasPG, got, tt.want)
			}
		})
	}
}

func TestWithSearchPath(t *testing.T) {
	tests := []struct {
		name string
		dsn  string
	}{
		{name: "URL", dsn: "postgres://u:p%40ss@127.0.0.1:5432/db?sslmode=disable"},
		{name: "URL without query", dsn: "postgresql://u:pw@127.0.0.1:5432/db"},
		{name: "URL with a search_path already", dsn: "postgres://u:pw@127.0.0.1/db?search_path=public&sslmode=disable"},
		{name: "key=value", dsn: "host=127.0.0.1 port=5432 user=u password=pw dbname=db sslmode=disable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := withSearchPath(tt.dsn, "bridge_bench_ab12_postgres")
			if err != nil {
				t.Fatalf("withSearchPath: %v", err)
			}
			cfg, err := pgx.ParseConfig(got)
			if err != nil {
				t.Fatalf("the result does not parse: %v", err)
			}
			if sp := cfg.RuntimeParams["search_path"]; sp != "bridge_bench_ab12_postgres" {
				t.Errorf("search_path %q, want bridge_bench_ab12_postgres", sp)
			}
			orig, _ := pgx.ParseConfig(tt.dsn)
			if cfg.Password != orig.Password || cfg.Database != orig.Database || cfg.Host != orig.Host || cfg.User != orig.User {
				t.Errorf("connection settings changed: got %s@%s/%s, want %s@%s/%s",
					cfg.User, cfg.Host, cfg.Database, orig.User, orig.Host, orig.Database)
			}
		})
	}
}

func TestCountingBackend(t *testing.T) {
	ctx := t.Context()
	inner, err := memstate.New().Open()
	if err != nil {
		t.Fatal(err)
	}
	b := &countingBackend{Backend: inner}
	if err := b.Put(ctx, []state.Entry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta(ctx, "cursor", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Meta(ctx, "cursor"); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := b.Load(ctx, func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("Load saw %d records, want 1 (the decorator must pass writes through)", n)
	}
	if got := b.writes.Load(); got != 3 {
		t.Errorf("writes %d, want 3 (one Put of two entries, one Delete, one SetMeta; reads not counted)", got)
	}
}
